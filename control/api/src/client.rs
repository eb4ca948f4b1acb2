//! A typed client for `/api/v1` and `/agent/v1`.

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::{de::DeserializeOwned, Serialize};

use crate::types::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach {url}: {}", chain(.source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected response from {url}: {message}")]
    Decode { url: String, message: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// HTTP client for one server, optionally with a bearer token.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self::with_http(reqwest::Client::new(), base, token)
    }

    /// Use a preconfigured `reqwest::Client` (the agent brings its own mTLS setup).
    pub fn with_http(http: reqwest::Client, base: &str, token: Option<String>) -> Self {
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    async fn send<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let resp = rb.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            return Err(error_from(status, &bytes));
        }
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body).map_err(|e| ClientError::Decode {
            url,
            message: e.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(Method::GET, path), path).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::POST, path).json(body), path)
            .await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::PUT, path).json(body), path)
            .await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::PATCH, path).json(body), path)
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(Method::DELETE, path), path).await
    }

    /// Opens a relayed byte stream (an HTTP/1.1 upgrade), e.g.
    /// `/api/v1/workspaces/dev/relay/ssh`.
    pub async fn relay(&self, path: &str) -> Result<reqwest::Upgraded, ClientError> {
        let url = self.url(path);
        let resp = self
            .request(Method::GET, path)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, crate::relay::UPGRADE_RELAY)
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(error_from(status, &bytes));
        }
        resp.upgrade()
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }

    // ------------------------------------------------------------ typed calls

    pub async fn me(&self) -> Result<User, ClientError> {
        self.get("/api/v1/users/me").await
    }

    pub async fn workspace(&self, name: &str) -> Result<Workspace, ClientError> {
        self.get(&format!(
            "/api/v1/workspaces/{}",
            crate::percent_encode(name)
        ))
        .await
    }

    pub async fn workspaces(&self) -> Result<Vec<Workspace>, ClientError> {
        self.get("/api/v1/workspaces").await
    }

    pub async fn build(&self, id: &str) -> Result<Build, ClientError> {
        self.get(&format!("/api/v1/builds/{id}")).await
    }

    /// Streams a build's log lines (NDJSON) to `on_line` until the build's job ends.
    pub async fn follow_build_logs(
        &self,
        build_id: &str,
        on_line: impl FnMut(LogLine),
    ) -> Result<(), ClientError> {
        self.build_logs(build_id, true, on_line).await
    }

    /// The build's log lines so far.
    pub async fn follow_build_logs_once(
        &self,
        build_id: &str,
        on_line: impl FnMut(LogLine),
    ) -> Result<(), ClientError> {
        self.build_logs(build_id, false, on_line).await
    }

    async fn build_logs(
        &self,
        build_id: &str,
        follow: bool,
        on_line: impl FnMut(LogLine),
    ) -> Result<(), ClientError> {
        self.ndjson(
            &format!("/api/v1/builds/{build_id}/logs?follow={follow}"),
            on_line,
        )
        .await
    }

    /// A workspace's agent logs (script output), optionally of one source; with `follow` the
    /// stream stays open for new lines.
    pub async fn agent_logs(
        &self,
        workspace: &str,
        source: Option<&str>,
        follow: bool,
        on_line: impl FnMut(LogLine),
    ) -> Result<(), ClientError> {
        let mut path = format!(
            "/api/v1/workspaces/{}/agent-logs?follow={follow}",
            crate::percent_encode(workspace)
        );
        if let Some(s) = source {
            let enc = crate::percent_encode(s);
            path.push_str(&format!("&source={enc}"));
        }
        self.ndjson(&path, on_line).await
    }

    async fn ndjson(
        &self,
        path: &str,
        mut on_line: impl FnMut(LogLine),
    ) -> Result<(), ClientError> {
        let path = path.to_string();
        let url = self.url(&path);
        let resp = self
            .request(Method::GET, &path)
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(error_from(status, &bytes));
        }
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                if line.is_empty() {
                    continue;
                }
                let parsed: LogLine =
                    serde_json::from_slice(line).map_err(|e| ClientError::Decode {
                        url: url.clone(),
                        message: e.to_string(),
                    })?;
                on_line(parsed);
            }
        }
        Ok(())
    }
}

/// An error and its causes, joined: reqwest's own message alone hides the TLS or I/O reason.
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

fn error_from(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => ClientError::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "http_error".into(),
            message: String::from_utf8_lossy(bytes).chars().take(300).collect(),
        },
    }
}
