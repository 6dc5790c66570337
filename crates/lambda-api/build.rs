//! Compiles `proto/` with protox (pure Rust: nothing is downloaded) into the
//! tonic service and client, and keeps the descriptor set for reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(["lambda/v1/lambda.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("lambda_descriptor.bin"), prost::Message::encode_to_vec(&files))?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(files)?;
    Ok(())
}
