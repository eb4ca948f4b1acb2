//! Sign-in through an OpenID Connect provider: the authorization code flow with PKCE (S256),
//! `state` and `nonce` (`GET /oidc/login`, `GET /oidc/callback`). The provider is found by
//! discovery (at start, and again on a sign-in until it answers); ID tokens are checked against
//! its JWKS (RS*/PS*/ES*), issuer, audience, expiry and nonce. A first sign-in creates the user
//! (when sign-ups are on) and links the identity (issuer + subject); every sign-in sets the
//! user's identity-provider groups from the groups claim and mints a browser session.

use super::error::ApiQuery;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::{self, ct_eq, random_secret};
use super::web::{esc, pct, safe_next};
use super::AppState;
use crate::store::UserRow;

/// The `--oidc-*` flags.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    /// None: a public client (PKCE only).
    pub client_secret: Option<String>,
    pub scopes: String,
    pub groups_claim: String,
    pub username_claim: String,
    pub allow_signups: bool,
}

/// The cookie tying a callback to the browser that started the sign-in: the `state` value.
const COOKIE: &str = "outpost_oidc";
/// How long a started sign-in may take at the provider.
const PENDING_SECS: u64 = 600;
const MAX_PENDING: usize = 10_000;
/// JWKS are fetched again for an unknown key id, at most this often.
const JWKS_REFRESH: Duration = Duration::from_secs(10);
/// The organization whose groups the groups claim sets.
const ORG: &str = "default";
/// What an SSO user's password hash is: no password matches it.
const NO_PASSWORD: &str = "!oidc";

#[derive(Clone)]
struct Provider {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
    /// `client_secret_post` (the provider does not take `client_secret_basic`).
    secret_in_body: bool,
    keys: Vec<jsonwebtoken::jwk::Jwk>,
    keys_at: Instant,
}

struct Pending {
    verifier: String,
    nonce: String,
    next: String,
    at: Instant,
}

/// The provider's client: configuration, discovery (once it succeeds) and sign-ins in progress.
pub struct Oidc {
    pub config: OidcConfig,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Why a callback fails: the status and the message the user sees.
type Fail = (StatusCode, String);

fn bad_gateway(msg: impl Into<String>) -> Fail {
    (StatusCode::BAD_GATEWAY, msg.into())
}

impl Oidc {
    /// The client, trusting the system's root certificates (rustls, no OpenSSL).
    pub fn new(config: OidcConfig) -> anyhow::Result<Oidc> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Oidc {
            config,
            http,
            provider: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The discovered provider, discovering it now if that has not succeeded yet.
    pub async fn provider_ready(&self) -> Result<(), String> {
        self.provider().await.map(|_| ())
    }

    async fn provider(&self) -> Result<Arc<Provider>, String> {
        let mut p = self.provider.lock().await;
        if let Some(p) = p.as_ref() {
            return Ok(p.clone());
        }
        let found = Arc::new(self.discover().await?);
        *p = Some(found.clone());
        Ok(found)
    }

    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, String> {
        let mut rb = self
            .http
            .get(url)
            .header(header::ACCEPT, "application/json");
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        resp.json()
            .await
            .map_err(|e| format!("{url} did not answer JSON: {e}"))
    }

    async fn discover(&self) -> Result<Provider, String> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let m = self.get_json(&url, None).await?;
        let field = |k: &str| {
            m[k].as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("{url} has no {k:?}: is --oidc-issuer-url right?"))
        };
        let said = field("issuer")?;
        if said.trim_end_matches('/') != issuer {
            return Err(format!(
                "the provider at {url} says its issuer is {said:?}, not {issuer:?} (--oidc-issuer-url)"
            ));
        }
        let methods: Vec<&str> = m["token_endpoint_auth_methods_supported"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let jwks_uri = field("jwks_uri")?;
        let keys = self.fetch_keys(&jwks_uri).await?;
        Ok(Provider {
            issuer: said,
            authorization_endpoint: field("authorization_endpoint")?,
            token_endpoint: field("token_endpoint")?,
            userinfo_endpoint: field("userinfo_endpoint").ok(),
            jwks_uri,
            secret_in_body: !methods.is_empty()
                && !methods.contains(&"client_secret_basic")
                && methods.contains(&"client_secret_post"),
            keys,
            keys_at: Instant::now(),
        })
    }

    /// The provider's signing keys (keys of kinds we cannot use are skipped).
    async fn fetch_keys(&self, jwks_uri: &str) -> Result<Vec<jsonwebtoken::jwk::Jwk>, String> {
        let set = self.get_json(jwks_uri, None).await?;
        let keys: Vec<jsonwebtoken::jwk::Jwk> = set["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
                    .filter_map(|k| serde_json::from_value(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if keys.is_empty() {
            return Err(format!("{jwks_uri} holds no signing key we can use"));
        }
        Ok(keys)
    }

    /// The keys again (a key id we do not know: the provider rotated its keys).
    async fn refresh_keys(&self) -> Result<Arc<Provider>, String> {
        let mut guard = self.provider.lock().await;
        let Some(p) = guard.as_ref() else {
            return Err("the provider is not discovered".into());
        };
        if p.keys_at.elapsed() < JWKS_REFRESH {
            return Ok(p.clone());
        }
        let mut fresh = (**p).clone();
        fresh.keys = self.fetch_keys(&p.jwks_uri).await?;
        fresh.keys_at = Instant::now();
        let fresh = Arc::new(fresh);
        *guard = Some(fresh.clone());
        Ok(fresh)
    }

    fn remember(&self, state: String, pending: Pending) -> bool {
        let mut m = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        m.retain(|_, p| p.at.elapsed() < Duration::from_secs(PENDING_SECS));
        if m.len() >= MAX_PENDING {
            return false;
        }
        m.insert(state, pending);
        true
    }

    fn take(&self, state: &str) -> Option<Pending> {
        let mut m = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        m.remove(state)
            .filter(|p| p.at.elapsed() < Duration::from_secs(PENDING_SECS))
    }

    /// Trades the code for tokens at the token endpoint.
    async fn exchange(
        &self,
        p: &Provider,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Value, Fail> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut rb = self.http.post(&p.token_endpoint);
        match self.config.client_secret.as_deref() {
            Some(secret) if p.secret_in_body => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret));
            }
            Some(secret) => {
                // RFC 6749 2.3.1: both halves form-encoded before Basic.
                rb = rb.basic_auth(pct(&self.config.client_id), Some(pct(secret)));
            }
            None => form.push(("client_id", &self.config.client_id)),
        }
        let resp = rb
            .header(header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| bad_gateway(format!("cannot reach the provider's token endpoint: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(bad_gateway(format!(
                "the provider refused the sign-in code ({status}: {} {})",
                body["error"].as_str().unwrap_or(""),
                body["error_description"].as_str().unwrap_or("")
            )));
        }
        Ok(body)
    }

    /// The ID token's claims once its signature, issuer, audience, expiry and nonce check out.
    async fn verify(&self, p: Arc<Provider>, token: &str, nonce: &str) -> Result<Value, Fail> {
        use jsonwebtoken::Algorithm as A;
        let invalid =
            |why: String| bad_gateway(format!("the provider's ID token is not valid: {why}"));
        let head = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        if !matches!(
            head.alg,
            A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 | A::ES256 | A::ES384
        ) {
            return Err(invalid(format!("algorithm {:?} is not accepted", head.alg)));
        }
        let find = |p: &Provider| -> Option<jsonwebtoken::jwk::Jwk> {
            match head.kid.as_deref() {
                Some(kid) => p
                    .keys
                    .iter()
                    .find(|k| k.common.key_id.as_deref() == Some(kid))
                    .cloned(),
                None if p.keys.len() == 1 => p.keys.first().cloned(),
                None => None,
            }
        };
        let jwk = match find(&p) {
            Some(k) => k,
            None => find(&*(self.refresh_keys().await.map_err(bad_gateway)?))
                .ok_or_else(|| invalid("signed with a key the provider does not publish".into()))?,
        };
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| invalid(e.to_string()))?;
        let mut v = jsonwebtoken::Validation::new(head.alg);
        v.set_issuer(&[&p.issuer]);
        v.set_audience(&[&self.config.client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 60;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &v)
            .map_err(|e| invalid(e.to_string()))?
            .claims;
        if !claims["nonce"].as_str().is_some_and(|n| ct_eq(n, nonce)) {
            return Err(invalid("its nonce is not this sign-in's".into()));
        }
        if claims["aud"].as_array().is_some_and(|a| a.len() > 1)
            && claims["azp"].as_str() != Some(self.config.client_id.as_str())
        {
            return Err(invalid("it was issued to another client (azp)".into()));
        }
        Ok(claims)
    }
}

/// The callback URL registered at the provider.
fn redirect_uri(state: &AppState) -> String {
    format!("{}/oidc/callback", state.access_url.trim_end_matches('/'))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A sign-in that failed: a page saying why, with the way back.
fn fail((status, msg): Fail) -> Response {
    let body = format!(
        "<h1>Sign-in failed</h1><p class=\"error\" id=\"error\">{}</p><p><a href=\"/login\">Back to sign-in</a></p>",
        esc(&msg)
    );
    let mut r = super::web::page("Sign-in failed", "oidc-error", &[], "", None, &body);
    *r.status_mut() = status;
    r
}

/// The page for a server with no provider configured.
fn not_configured() -> Response {
    fail((
        StatusCode::NOT_FOUND,
        "Single sign-on is not configured on this server.".into(),
    ))
}

#[derive(serde::Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// `GET /oidc/login?next=PATH`: off to the provider's authorization endpoint.
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LoginQuery>,
) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return not_configured();
    };
    let next = safe_next(q.next.as_deref());
    let p = match oidc.provider().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("OIDC discovery failed: {e}");
            return fail(bad_gateway(format!(
                "Single sign-on is unavailable right now (the identity provider did not answer discovery: {e})."
            )));
        }
    };
    let verifier = random_secret();
    let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
    let st = random_secret();
    let nonce = random_secret();
    let pending = Pending {
        verifier,
        nonce: nonce.clone(),
        next,
        at: Instant::now(),
    };
    if !oidc.remember(st.clone(), pending) {
        return fail((
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins are in progress; try again in a few minutes.".into(),
        ));
    }
    let mut scopes: Vec<&str> = oidc.config.scopes.split_whitespace().collect();
    if !scopes.contains(&"openid") {
        scopes.insert(0, "openid");
    }
    let sep = if p.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={st}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
        p.authorization_endpoint,
        pct(&oidc.config.client_id),
        pct(&redirect_uri(&state)),
        pct(&scopes.join(" ")),
    );
    let mut r = Redirect::to(&url).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={st}; Path=/oidc; HttpOnly; SameSite=Lax; Max-Age={PENDING_SECS}{}",
        super::web::secure_flag(&state, &headers)
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(serde::Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oidc/callback?code&state`: back from the provider.
pub(super) async fn callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return not_configured();
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.headers = headers;
    let cookie_state = auth::cookie(&parts, COOKIE).unwrap_or("");
    let sent = q.state.as_deref().unwrap_or("");
    let pending = if cookie_state.is_empty() || !ct_eq(cookie_state, sent) {
        None
    } else {
        oidc.take(sent)
    };
    let result = match pending {
        None => Err((
            StatusCode::BAD_REQUEST,
            "This sign-in was not started from this browser or has expired; start again from the sign-in page.".to_string(),
        )),
        Some(_) if q.error.is_some() => Err((
            StatusCode::BAD_REQUEST,
            format!(
                "The identity provider did not sign you in: {} {}",
                q.error.as_deref().unwrap_or(""),
                q.error_description.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_string(),
        )),
        Some(p) => match q.code.as_deref().filter(|c| !c.is_empty()) {
            None => Err((
                StatusCode::BAD_REQUEST,
                "The identity provider sent no code.".to_string(),
            )),
            Some(code) => finish(&state, oidc, code, &p).await.map(|u| (u, p.next)),
        },
    };
    let clear = format!("{COOKIE}=; Path=/oidc; HttpOnly; Max-Age=0");
    let mut r = match result {
        Ok((user, next)) => {
            state.audit.record(
                "user.login",
                "ok",
                &user.username,
                Some(&format!("user:{}", user.username)),
                None,
                None,
                Some(peer.ip().to_string()),
                "(oidc)",
            );
            super::web::start_session(&state, &parts.headers, &user, &next).await
        }
        Err(f) => {
            state.audit.record(
                "user.login",
                "rejected",
                "(oidc)",
                None,
                None,
                None,
                Some(peer.ip().to_string()),
                format!("(oidc) {}", f.1),
            );
            fail(f)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The code traded, the ID token checked, the user found or created, their groups set.
async fn finish(state: &AppState, oidc: &Oidc, code: &str, p: &Pending) -> Result<UserRow, Fail> {
    let provider = oidc.provider().await.map_err(bad_gateway)?;
    let tokens = oidc
        .exchange(&provider, code, &p.verifier, &redirect_uri(state))
        .await?;
    let id_token = tokens["id_token"]
        .as_str()
        .ok_or_else(|| bad_gateway("the provider's token response has no ID token"))?;
    let mut claims = oidc.verify(provider.clone(), id_token, &p.nonce).await?;
    let sub = claims["sub"].as_str().unwrap_or("").to_string();
    if sub.is_empty() {
        return Err(bad_gateway("the provider's ID token names no subject"));
    }
    // Profile claims often come from the userinfo endpoint only.
    if let (Some(url), Some(at)) = (&provider.userinfo_endpoint, tokens["access_token"].as_str()) {
        match oidc.get_json(url, Some(at)).await {
            Ok(Value::Object(info)) if info.get("sub").and_then(Value::as_str) == Some(&sub) => {
                if let Value::Object(c) = &mut claims {
                    for (k, v) in info {
                        c.entry(k).or_insert(v);
                    }
                }
            }
            Ok(_) => tracing::warn!("OIDC userinfo answered for another subject; ignored"),
            Err(e) => tracing::warn!("OIDC userinfo: {e}"),
        }
    }
    let store_err = |e: crate::store::StoreError| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store error: {e}"),
        )
    };
    let user = match state
        .store
        .user_by_identity(&provider.issuer, &sub)
        .await
        .map_err(store_err)?
    {
        Some(u) => u,
        None => create(state, oidc, &provider.issuer, &sub, &claims).await?,
    };
    if user.suspended_at.is_some() {
        return Err((
            StatusCode::FORBIDDEN,
            "Your account is suspended; ask an admin to reinstate it.".into(),
        ));
    }
    let groups = groups_of(&claims[oidc.config.groups_claim.as_str()]);
    state
        .store
        .set_idp_groups(ORG, &user.id, &groups)
        .await
        .map_err(store_err)?;
    Ok(user)
}

/// A first sign-in: a new user named after the username claim (or the email's local part).
async fn create(
    state: &AppState,
    oidc: &Oidc,
    issuer: &str,
    sub: &str,
    claims: &Value,
) -> Result<UserRow, Fail> {
    if !oidc.config.allow_signups {
        return Err((
            StatusCode::FORBIDDEN,
            "No Outpost account is linked to this identity and sign-ups through single sign-on are off; ask an admin.".into(),
        ));
    }
    let wanted = claims[oidc.config.username_claim.as_str()]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            claims["email"]
                .as_str()
                .and_then(|e| e.split('@').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let Some(name) = sanitize_username(&wanted) else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "The identity provider gave no usable username (claim {:?} or email): {wanted:?}",
                oidc.config.username_claim
            ),
        ));
    };
    let taken = || {
        (
            StatusCode::CONFLICT,
            format!("There is already an Outpost user named {name:?} who is not linked to this identity; ask an admin."),
        )
    };
    let store_err = |e: crate::store::StoreError| match e {
        crate::store::StoreError::Conflict(_) => taken(),
        e => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store error: {e}"),
        ),
    };
    if state
        .store
        .user_by_username(&name)
        .await
        .map_err(store_err)?
        .is_some()
    {
        return Err(taken());
    }
    let user = state
        .store
        .create_user(&name, NO_PASSWORD, false, false)
        .await
        .map_err(store_err)?;
    state
        .store
        .link_identity(issuer, sub, &user.id)
        .await
        .map_err(store_err)?;
    state.audit.record(
        "user.create",
        "ok",
        &name,
        Some(&format!("user:{name}")),
        None,
        None,
        None,
        format!("{name} (first sign-in through {issuer})"),
    );
    Ok(user)
}

/// A claim's value as Outpost's rules have usernames: lowercase letters, digits, `-` and `_`,
/// starting with a letter, at most 32 characters (other characters become `-`).
fn sanitize_username(raw: &str) -> Option<String> {
    let mapped: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name: String = mapped
        .trim_start_matches(|c: char| !c.is_ascii_lowercase())
        .chars()
        .take(32)
        .collect();
    let name = name.trim_end_matches('-').to_string();
    (!name.is_empty()).then_some(name)
}

/// The groups claim: a list of names (or one name); odd entries are dropped.
fn groups_of(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = match v {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    };
    out.retain(|g| !g.is_empty() && g.len() <= 64 && !g.chars().any(char::is_control));
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_outposts_rules() {
        assert_eq!(sanitize_username("alice").as_deref(), Some("alice"));
        assert_eq!(
            sanitize_username("Alice.Smith").as_deref(),
            Some("alice-smith")
        );
        assert_eq!(sanitize_username("1bob").as_deref(), Some("bob"));
        assert_eq!(sanitize_username("_x_").as_deref(), Some("x_"));
        assert_eq!(sanitize_username("123"), None);
        assert_eq!(sanitize_username("").as_deref(), None);
        assert_eq!(
            sanitize_username(&"a".repeat(40)).map(|s| s.len()),
            Some(32)
        );
    }

    #[test]
    fn groups_claim_shapes() {
        assert_eq!(
            groups_of(&serde_json::json!(["ops", "devs", "ops", 3])),
            vec!["devs".to_string(), "ops".to_string()]
        );
        assert_eq!(
            groups_of(&serde_json::json!("devs")),
            vec!["devs".to_string()]
        );
        assert!(groups_of(&Value::Null).is_empty());
    }
}
