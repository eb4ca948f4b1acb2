//! Wake-ups: log followers waiting on a topic, held agent polls, provisioner daemons waiting for
//! jobs, live connections of a suspended user. Each happens in this process and is passed to
//! every other replica through the cluster's bus (`cluster.rs`), which calls the `_local` half.

use outpost_common::LockExt;
use tokio::sync::{watch, Notify};

use super::cluster::Event;
use super::Inner;
use std::future::Future;
use std::sync::Arc;

impl Inner {
    pub fn bump_progress(&self) {
        self.progress.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn agent_waker(&self, agent_id: &str) -> Arc<Notify> {
        let mut map = self.agent_wakers.locked();
        map.entry(agent_id.to_string()).or_default().clone()
    }

    /// Waits for a change of `topic` (see [`Inner::touch`]).
    pub fn subscribe(&self, topic: &str) -> watch::Receiver<u64> {
        self.topics
            .locked()
            .entry(topic.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// `topic` changed: wakes its followers, here and in every replica.
    pub fn touch(&self, topic: &str) {
        self.touch_local(topic);
        self.cluster.publish(Event::Touch(topic));
    }

    /// Wakes `topic`'s followers in this process (and forgets topics nobody follows any more).
    pub(super) fn touch_local(&self, topic: &str) {
        let mut m = self.topics.locked();
        if let Some(tx) = m.get(topic) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
            if tx.receiver_count() == 0 {
                m.remove(topic);
            }
        }
    }

    /// Resolves when `user_id`'s connections must end (see [`Inner::cut_user`]).
    pub fn user_cut(&self, user_id: &str) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self
            .user_cuts
            .locked()
            .entry(user_id.to_string())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }

    /// Ends every live connection of `user_id` now, in every replica.
    pub fn cut_user(&self, user_id: &str) {
        self.cut_user_local(user_id);
        self.cluster.publish(Event::Cut(user_id));
    }

    pub(super) fn cut_user_local(&self, user_id: &str) {
        if let Some(tx) = self.user_cuts.locked().remove(user_id) {
            let _ = tx.send(true);
        }
    }

    /// Answers the agent's held poll now (a command is queued), wherever it is held.
    pub fn wake_agent(&self, agent_id: &str) {
        self.wake_agent_local(agent_id);
        self.cluster.publish(Event::Wake(agent_id));
    }

    /// A command was queued for the agent: its next poll here asks the store (see
    /// [`super::poll_sweep`]) and its held poll here answers now.
    pub(super) fn wake_agent_local(&self, agent_id: &str) {
        self.poll_sweep.woken(agent_id);
        self.agent_waker(agent_id).notify_waiters();
    }

    /// Answers the agent's poll if one is held here (it looks at the store again).
    pub(super) fn wake_held_poll(&self, agent_id: &str) {
        if let Some(n) = self.agent_wakers.locked().get(agent_id) {
            n.notify_waiters();
        }
    }

    /// A job was queued (or let go): provisioner daemons waiting in any replica look again.
    pub fn job_queued(&self) {
        self.jobs_changed.notify_waiters();
        self.cluster.publish(Event::Jobs);
    }

    /// The bus lost events (its connection dropped): everything waiting here looks again.
    pub(super) fn wake_all_local(&self) {
        self.poll_sweep.woken_all();
        for n in self.agent_wakers.locked().values() {
            n.notify_waiters();
        }
        for tx in self.topics.locked().values() {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
        self.jobs_changed.notify_waiters();
        self.bump_progress();
    }

    /// The agent was revoked: end its held polls and drop its pending liveness and tunnel, in
    /// every replica.
    pub fn forget_agent(&self, agent_id: &str) {
        self.forget_agent_local(agent_id);
        self.cluster.publish(Event::Forget(agent_id));
    }

    pub(super) fn forget_agent_local(&self, agent_id: &str) {
        let mut map = self.agent_wakers.locked();
        if let Some(n) = map.remove(agent_id) {
            n.notify_waiters();
        }
        self.liveness.forget(agent_id);
        self.tunnels.forget(agent_id);
        self.agent_cache.forget(agent_id);
    }

    /// Revokes every live agent of a workspace at once and audits it.
    pub async fn revoke_workspace_agents(
        &self,
        workspace_id: &str,
        reason: &str,
    ) -> Result<(), crate::store::StoreError> {
        for agent in self.store.revoke_agents(workspace_id).await? {
            self.forget_agent(&agent);
            self.audit.record(
                "agent.revoke",
                "revoked",
                "control",
                Some(&format!("agent:{agent}")),
                Some(workspace_id),
                Some(&agent),
                None,
                reason,
            );
        }
        Ok(())
    }
}
