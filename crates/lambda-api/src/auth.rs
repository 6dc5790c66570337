//! Who is calling: JWT bearer authentication (HS256 or RS256), the auth
//! modes of the contract (`off`, `optional`, `required`) and scope checks.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lambda_core::{ErrorCode, LambdaError, Language};
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState, ratelimit};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication: every caller may do everything (local development).
    Off,
    /// A token is checked when present; without one the caller is anonymous
    /// with the configured anonymous scopes.
    Optional,
    /// Every `/api/v1` call needs a valid token.
    Required,
}

impl AuthMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "optional" => Some(Self::Optional),
            "required" => Some(Self::Required),
            _ => None,
        }
    }
}

/// The key that verifies tokens.
#[derive(Clone)]
pub enum JwtKey {
    Hs256(Vec<u8>),
    /// PEM-encoded RSA public key.
    Rs256Public(Vec<u8>),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        match self {
            Self::Hs256(_) => f.write_str("JwtKey::Hs256(<redacted>)"),
            Self::Rs256Public(_) => f.write_str("JwtKey::Rs256Public(<pem>)"),
        }
    }
}

/// Authentication settings, built once at startup.
#[derive(Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    decoding: Option<(DecodingKey, Validation)>,
    /// Scopes of a caller without a token in `optional` mode.
    pub anonymous_scopes: Vec<String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("anonymous_scopes", &self.anonymous_scopes)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self::off()
    }
}

impl AuthConfig {
    pub fn off() -> Self {
        Self { mode: AuthMode::Off, decoding: None, anonymous_scopes: Vec::new() }
    }

    /// `mode` other than `off` needs a key; the error names what is wrong.
    pub fn new(mode: AuthMode, key: Option<&JwtKey>, anonymous_scopes: Vec<String>) -> Result<Self, String> {
        let decoding = match key {
            None if mode != AuthMode::Off => {
                return Err(
                    "auth is on but no key is configured (LAMBDA_JWT_SECRET or LAMBDA_JWT_PUBLIC_KEY_FILE)"
                        .into(),
                );
            }
            None => None,
            Some(JwtKey::Hs256(secret)) => {
                let key =
                    DecodingKey::from_secret(secret).map_err(|e| format!("unusable JWT secret: {e}"))?;
                Some((key, validation(Algorithm::HS256)))
            }
            Some(JwtKey::Rs256Public(pem)) => {
                let key = DecodingKey::from_rsa_pem(pem)
                    .map_err(|e| format!("not an RSA public key in PEM form: {e}"))?;
                Some((key, validation(Algorithm::RS256)))
            }
        };
        Ok(Self { mode, decoding, anonymous_scopes })
    }

    fn verify(&self, token: &str) -> Result<Claims, LambdaError> {
        let Some((key, validation)) = &self.decoding else {
            return Err(unauthorized("tokens are not accepted: no key is configured"));
        };
        jsonwebtoken::decode::<Claims>(token, key, validation).map(|data| data.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidSignature => "the token signature is invalid",
                ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (sub, exp)",
                _ => "the token is malformed",
            };
            unauthorized(why)
        })
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECONDS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "sub"]);
    v
}

fn unauthorized(message: &str) -> LambdaError {
    LambdaError::new(ErrorCode::Unauthorized, message)
}

/// The claims we read. Unknown claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Signs a token (operators' `lambda token`, tests). HS256 only: a public key cannot sign.
pub fn sign_hs256(secret: &[u8], claims: &Claims) -> Result<String, String> {
    let key = EncodingKey::from_secret(secret).map_err(|e| format!("unusable secret: {e}"))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .map_err(|e| format!("signing failed: {e}"))
}

/// The caller of one request, put in the request extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// `sub` of a verified token; `None` for anonymous callers and with auth off.
    pub user_id: Option<String>,
    scopes: Arc<HashSet<String>>,
    /// False only with auth `off`: nothing is checked.
    enforced: bool,
    pub addr: IpAddr,
}

impl Caller {
    /// Auth off: every caller may do everything.
    pub fn unrestricted(addr: IpAddr) -> Self {
        Self { user_id: None, scopes: Arc::default(), enforced: false, addr }
    }

    pub fn is_enforced(&self) -> bool {
        self.enforced
    }

    pub fn is_authenticated(&self) -> bool {
        self.user_id.is_some()
    }

    fn has(&self, scope: &str) -> bool {
        !self.enforced || self.scopes.contains("admin") || self.scopes.contains(scope)
    }

    fn require_any(&self, scopes: &[&str]) -> Result<(), ApiError> {
        if scopes.iter().any(|s| self.has(s)) {
            return Ok(());
        }
        Err(LambdaError::new(
            ErrorCode::Forbidden,
            format!("the token lacks the scope {}", scopes.join(" or ")),
        )
        .with("required_scopes", scopes.to_vec())
        .into())
    }

    /// Initialize and execute need `execute:all` or `execute:<language>`.
    pub fn require_execute(&self, language: Language) -> Result<(), ApiError> {
        self.require_any(&["execute:all", &format!("execute:{language}")])
    }

    /// The function endpoints need `read:functions`.
    pub fn require_read_functions(&self) -> Result<(), ApiError> {
        self.require_any(&["read:functions"])
    }

    /// A session belongs to its creator; others get 403. Anonymous sessions
    /// (created without a token) are open to whoever holds their id.
    pub fn require_owner(&self, owner: Option<&str>, request_id: &str) -> Result<(), ApiError> {
        match owner {
            _ if !self.enforced || self.has("admin") => Ok(()),
            None => Ok(()),
            Some(owner) if self.user_id.as_deref() == Some(owner) => Ok(()),
            Some(_) => Err(ApiError::for_session(
                LambdaError::new(ErrorCode::Forbidden, "this session belongs to another user"),
                request_id,
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| LambdaError::internal("authentication did not run for this route").into())
    }
}

fn client_addr(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip())
}

/// Middleware: resolves the [`Caller`] of every `/api/v1` request.
/// The API routes' gate: authenticates the caller (401 with
/// `WWW-Authenticate`), then applies the rate limit of the route's class.
/// One layer rather than two: each layer costs allocations per request.
pub async fn gate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let addr = client_addr(&request);
    match caller(state.auth(), &request, addr) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            let class =
                request.extensions().get::<MatchedPath>().and_then(|p| ratelimit::class_of(p.as_str()));
            match class {
                Some(class) => ratelimit::limit(state, class, request, next).await,
                None => next.run(request).await,
            }
        }
        Err(error) => {
            let request_id = session_id_of(&request);
            let mut response = ApiError { error, request_id }.into_response();
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// The session id in the path of an execute or a session read, for the
/// error body of a request refused before its handler ran. Only an id
/// spelled as ids are (`[A-Za-z0-9._-]{1,64}`, what initialize accepts and
/// makes): nothing percent-encoded is echoed.
pub(crate) fn session_id_of(request: &Request) -> Option<String> {
    let route = request.extensions().get::<MatchedPath>()?.as_str();
    if !matches!(route, "/api/v1/execute/{request_id}" | "/api/v1/sessions/{request_id}") {
        return None;
    }
    let id = request.uri().path().rsplit('/').next()?;
    lambda_core::valid_client_request_id(id).then(|| id.to_owned())
}

fn caller(auth: &AuthConfig, request: &Request, addr: IpAddr) -> Result<Caller, LambdaError> {
    if auth.mode == AuthMode::Off {
        return Ok(Caller::unrestricted(addr));
    }
    let header = request.headers().get(axum::http::header::AUTHORIZATION);
    let Some(header) = header else {
        return match auth.mode {
            AuthMode::Required => Err(unauthorized("an Authorization: Bearer <token> header is required")),
            _ => {
                let scopes = auth.anonymous_scopes.iter().cloned().collect();
                Ok(Caller { user_id: None, scopes: Arc::new(scopes), enforced: true, addr })
            }
        };
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    let claims = auth.verify(token)?;
    if claims.sub.is_empty() {
        return Err(unauthorized("the token's sub is empty"));
    }
    let scopes = claims.scope.split_whitespace().map(str::to_owned).collect();
    Ok(Caller { user_id: Some(claims.sub), scopes: Arc::new(scopes), enforced: true, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-of-enough-length-for-hs256";

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn token(sub: &str, scope: &str, exp: u64) -> String {
        sign_hs256(SECRET, &Claims { sub: sub.into(), exp, scope: scope.into(), iat: None })
            .unwrap_or_default()
    }

    fn request(auth: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri("/api/v1/functions");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(axum::body::Body::empty()).unwrap_or_default()
    }

    fn config(mode: AuthMode) -> AuthConfig {
        AuthConfig::new(mode, Some(&JwtKey::Hs256(SECRET.to_vec())), vec!["read:functions".into()])
            .unwrap_or_default()
    }

    fn code(r: Result<Caller, LambdaError>) -> Result<Caller, ErrorCode> {
        r.map_err(|e| e.code)
    }

    const ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn modes() {
        let valid = format!("Bearer {}", token("alice", "execute:nodejs", now() + 60));
        let required = config(AuthMode::Required);
        assert_eq!(code(caller(&required, &request(None), ADDR)).err(), Some(ErrorCode::Unauthorized));
        let alice = code(caller(&required, &request(Some(&valid)), ADDR)).ok();
        assert_eq!(alice.as_ref().and_then(|c| c.user_id.clone()), Some("alice".into()));
        let optional = config(AuthMode::Optional);
        let anon = code(caller(&optional, &request(None), ADDR)).ok();
        assert!(anon.as_ref().is_some_and(|c| !c.is_authenticated() && c.require_read_functions().is_ok()));
        assert!(anon.is_some_and(|c| c.require_execute(Language::Nodejs).is_err()));
        let off = code(caller(&AuthConfig::off(), &request(Some("Bearer garbage")), ADDR)).ok();
        assert!(off.is_some_and(|c| c.require_execute(Language::Rust).is_ok()));
    }

    #[test]
    fn bad_tokens_are_401_even_when_optional() {
        let optional = config(AuthMode::Optional);
        let expired = format!("Bearer {}", token("a", "execute:all", now() - 3600));
        let other_key = sign_hs256(
            b"another-secret-another-secret-xx",
            &Claims { sub: "a".into(), exp: now() + 60, scope: String::new(), iat: None },
        )
        .unwrap_or_default();
        for header in [expired, format!("Bearer {other_key}"), "Bearer not.a.jwt".into(), "Basic abc".into()]
        {
            assert_eq!(
                code(caller(&optional, &request(Some(&header)), ADDR)).err(),
                Some(ErrorCode::Unauthorized),
                "{header}"
            );
        }
        let within_leeway = format!("Bearer {}", token("a", "", now() - 5));
        assert!(caller(&optional, &request(Some(&within_leeway)), ADDR).is_ok());
    }

    #[test]
    fn scopes_and_ownership() {
        let required = config(AuthMode::Required);
        let header = format!("Bearer {}", token("bob", "execute:python read:functions", now() + 60));
        let Ok(bob) = caller(&required, &request(Some(&header)), ADDR) else { panic!("bob is valid") };
        assert!(bob.require_execute(Language::Python).is_ok());
        let denied = bob.require_execute(Language::Nodejs).err().map(|e| e.error);
        assert_eq!(denied.as_ref().map(|e| e.code), Some(ErrorCode::Forbidden));
        assert!(denied.is_some_and(|e| e.message.contains("execute:nodejs")));
        assert!(bob.require_owner(Some("bob"), "r").is_ok());
        assert!(bob.require_owner(None, "r").is_ok());
        assert_eq!(bob.require_owner(Some("alice"), "r").err().map(|e| e.code()), Some(ErrorCode::Forbidden));
        let admin = format!("Bearer {}", token("root", "admin", now() + 60));
        let Ok(admin) = caller(&required, &request(Some(&admin)), ADDR) else { panic!("admin is valid") };
        assert!(
            admin.require_owner(Some("alice"), "r").is_ok() && admin.require_execute(Language::Wasm).is_ok()
        );
    }

    #[test]
    fn on_without_key_is_a_config_error() {
        assert!(AuthConfig::new(AuthMode::Required, None, vec![]).is_err());
        assert!(
            AuthConfig::new(AuthMode::Optional, Some(&JwtKey::Rs256Public(b"nope".to_vec())), vec![])
                .is_err()
        );
    }
}
