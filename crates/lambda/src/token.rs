//! `lambda token`: mint an HS256 token with the configured secret, for
//! operators and tests.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use lambda_api::auth::{Claims, sign_hs256};

use crate::security::SecurityArgs;

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Space-separated scopes, e.g. "execute:all read:functions".
    #[arg(long, default_value = "")]
    pub scope: String,
    /// Lifetime: seconds, or a number with s, m, h or d (e.g. 90s, 15m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// HS256 shared secret (as for `serve`).
    #[arg(long = "jwt-secret", env = "LAMBDA_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding LAMBDA_JWT_SECRET.
    #[arg(long = "jwt-secret-file", env = "LAMBDA_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
}

pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 =
        number.parse().map_err(|_| format!("`{s}` is not a duration like 3600, 90s, 15m, 1h or 7d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    if seconds == 0 {
        return Err("the ttl must be positive".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// Prints the token on stdout.
pub fn run(args: TokenArgs) -> Result<(), String> {
    let security = SecurityArgs::for_secret(args.jwt_secret.clone(), args.jwt_secret_file.clone());
    let secret = security
        .hs256_secret()?
        .ok_or("no LAMBDA_JWT_SECRET (or LAMBDA_JWT_SECRET_FILE) is set: tokens are signed with it")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let claims = Claims { sub: args.sub, exp: now + args.ttl.as_secs(), scope: args.scope, iat: Some(now) };
    if claims.sub.is_empty() {
        return Err("--sub must not be empty".into());
    }
    println!("{}", sign_hs256(secret.as_bytes(), &claims)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
