//! Outpost's end-to-end tests: one binary, a module per feature, driving the real `outpost` and
//! `outpost-agent` binaries against real SQLite and PostgreSQL.

mod account;
mod agent_api;
mod browser;
mod clients;
mod fixtures;
mod graceful;
mod harness;
mod procs;

mod abuse;
mod apps;
mod audit;
mod backup;
mod bad_input;
mod bootstrap;
mod cli_ops;
mod crash;
mod credentials;
mod dist;
mod docker;
mod health;
mod isolation;
mod lifecycle;
mod liveness;
mod metrics;
mod oidc;
mod owner_access;
mod provisioners;
mod replica_rig;
mod replicas;
mod retention;
mod roles;
mod routes;
mod schedule;
mod schedule_rules;
mod scripts;
mod secrets;
mod security;
mod ssh;
mod ssh_user;
mod teams;
mod users;
mod web;
mod web_schedule;
mod web_settings;
