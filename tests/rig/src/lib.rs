//! skiff's test rig: a real local registry (plain, basic auth, token auth, TLS, behind a
//! fault-injecting proxy), images built in Rust and pushed through the registry API, the
//! busybox fixture and a small loop-mounted filesystem ([`loopfs`]); preconditions that fail
//! loudly ([`require`]), child processes of a test binary ([`child`]) and bodies run as the
//! unprivileged test user ([`rootless`]). Used by the tests and benches of every crate.

pub mod busybox;
pub mod child;
pub mod client;
pub mod entry;
pub mod fault_proxy;
pub mod gated;
pub mod image;
pub mod loopfs;
pub mod registry;
pub mod require;
pub mod rootless;
pub mod synth;
pub mod tls;
pub mod token;

pub use client::RegistryClient;
pub use entry::{Entry, Kind};
pub use fault_proxy::{Fault, FaultProxy, Link, RequestLog};
pub use image::{Compression, Format, Image, ImageBuilder, Index, Platform};
pub use loopfs::LoopFs;
pub use registry::{Registry, RegistryOptions};
pub use require::{is_root, require_root};
pub use token::{TokenAuth, TokenServer};
