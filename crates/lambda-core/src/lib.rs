//! Domain types shared by every Lambda Microservice crate. No HTTP, no SQL, no processes.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod error;
pub mod function;
pub mod hash;
pub mod language;
pub mod limits;
pub mod session;

pub use canonical::{canonical_json, write_canonical_json};
pub use error::{ErrorCode, LambdaError};
pub use function::{Function, FunctionFilter, FunctionKind};
pub use hash::ScriptHash;
pub use language::{Language, LanguageMap, LanguageTitle};
pub use limits::Limits;
pub use session::{Session, SessionStatus, valid_client_request_id};
