//! The in-memory ssh-agent that holds the owner's git key.

use super::*;

/// Serves an ssh-agent socket holding only `key` (git over SSH inside the workspace signs with
/// it; the key never touches the disk). Adding, removing or locking keys is refused.
pub async fn serve_git_agent(path: PathBuf, key: PrivateKey) -> anyhow::Result<()> {
    #[derive(Clone)]
    struct OnlyOurs(Arc<std::sync::atomic::AtomicBool>);
    impl russh::keys::agent::server::Agent for OnlyOurs {
        fn confirm_request(
            &self,
            msg: russh::keys::agent::server::MessageType,
        ) -> impl std::future::Future<Output = bool> + Send {
            use russh::keys::agent::server::MessageType as M;
            let sealed = self.0.load(Ordering::SeqCst);
            let ok = match msg {
                M::RequestKeys | M::Sign => true,
                _ => !sealed,
            };
            async move { ok }
        }
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let sealed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    let agent = OnlyOurs(sealed.clone());
    tokio::spawn(async move {
        let _ = russh::keys::agent::server::serve(Box::pin(stream), agent).await;
    });
    let mut client = russh::keys::agent::client::AgentClient::connect_uds(&path).await?;
    client.add_identity(&key, &[]).await?;
    sealed.store(true, Ordering::SeqCst);
    Ok(())
}
