//! rootfs-cache: skiff's content-addressed store of unpacked OCI image layers.
//!
//! Every layer is unpacked once, verified by digest, and shared by every image and run that
//! uses it. See the crate README and skiff's DESIGN.md for the on-disk layout.

pub mod digest;

pub use digest::{Digest, DigestError};
