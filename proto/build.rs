//! Generates the protocol and event types with prost from `proto/*.proto`, parsing them
//! with protox (pure Rust): building needs no `protoc` binary.

use std::path::PathBuf;

const FILES: [&str; 9] = [
    "refs.proto",
    "media.proto",
    "types.proto",
    "chats.proto",
    "auth.proto",
    "messages.proto",
    "updates.proto",
    "core.proto",
    "events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto");
    println!("cargo:rerun-if-changed=proto");
    let files: Vec<PathBuf> = FILES.iter().map(|file| dir.join(file)).collect();
    let descriptors = protox::compile(&files, [&dir])?;
    prost_build::Config::new()
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_fds(descriptors)?;
    Ok(())
}
