//! Glue of the handler form: reads the params JSON on stdin, calls the user's
//! `handle`, and prints the result JSON on stdout. An `Err` from `handle` is
//! written to stderr behind a marker and exits with status 1. The user's file
//! is `user.rs` verbatim, so compiler diagnostics keep its line numbers.

mod user;

mod __lambda {
    use std::io::{Read, Write};

    use serde_json::Value;

    /// Marks the line of stderr that carries the error of an `Err` result.
    const ERROR_MARKER: &str = "\u{1e}lambda-error:";

    /// What a handler may return: a value, or a `Result` whose error is shown.
    pub trait Outcome {
        fn into_outcome(self) -> Result<Value, String>;
    }

    impl Outcome for Value {
        fn into_outcome(self) -> Result<Value, String> {
            Ok(self)
        }
    }

    impl<E: std::fmt::Display> Outcome for Result<Value, E> {
        fn into_outcome(self) -> Result<Value, String> {
            self.map_err(|e| e.to_string())
        }
    }

    pub fn run<O: Outcome>(handle: impl FnOnce(Value) -> O) {
        let mut input = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut input) {
            fail(&format!("cannot read params: {e}"));
        }
        let params = if input.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_str(&input) {
                Ok(v) => v,
                Err(e) => fail(&format!("params are not JSON: {e}")),
            }
        };
        match handle(params).into_outcome() {
            Ok(value) => {
                let mut out = std::io::stdout().lock();
                let written = serde_json::to_writer(&mut out, &value)
                    .map_err(|e| e.to_string())
                    .and_then(|()| out.write_all(b"\n").map_err(|e| e.to_string()))
                    .and_then(|()| out.flush().map_err(|e| e.to_string()));
                if let Err(e) = written {
                    fail(&format!("cannot write the result: {e}"));
                }
            }
            Err(message) => fail(&message),
        }
    }

    fn fail(message: &str) -> ! {
        let encoded = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".to_owned());
        eprintln!("{ERROR_MARKER}{encoded}");
        std::process::exit(1);
    }
}

fn main() {
    __lambda::run(user::handle);
}
