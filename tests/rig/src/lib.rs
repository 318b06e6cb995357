//! skiff's test rig: a real local registry, images built in Rust and pushed through the
//! registry API, and the busybox fixture. Used by the tests and benches of every crate.

pub mod busybox;
pub mod client;
pub mod entry;
pub mod image;
pub mod registry;
pub mod rootless;
pub mod synth;
pub mod tls;

pub use client::RegistryClient;
pub use entry::{Entry, Kind};
pub use image::{Compression, Format, Image, ImageBuilder, Index, Platform};
pub use registry::{Registry, RegistryOptions};
