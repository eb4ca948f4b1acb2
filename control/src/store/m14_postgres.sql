ALTER TABLE audit_events ADD COLUMN target TEXT;
CREATE INDEX audit_events_target ON audit_events (target, id);
CREATE INDEX audit_events_actor ON audit_events (actor, id)
