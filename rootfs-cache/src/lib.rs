//! rootfs-cache: skiff's content-addressed store of unpacked OCI image layers.
//!
//! Every layer is unpacked once, verified by digest, and shared by every image and run that
//! uses it. The layout and the rules are in skiff's DESIGN.md ("The store").

mod confined;
mod containers;
pub mod digest;
pub mod extract;
pub mod gc;
pub mod holds;
pub mod layer_writer;
pub mod lock;
pub mod mounts;
pub mod records;
mod scan;
pub mod store;
mod sys;
mod unpacking;
pub mod verify;

pub use confined::ConfinedRoot;
pub use digest::{Digest, DigestError};
pub use extract::{ExtractError, ExtractOptions, ExtractStats, OverlayXattrs, Ownership};
pub use gc::{GcOptions, GcReport, Kept};
pub use holds::RunHold;
pub use layer_writer::Compression;
pub use mounts::mount_points_under;
pub use records::{ImageLayer, ImageRecord, LayerRecord, RefRecord};
pub use store::{LayerOutcome, LayerSlot, LayerWriter, Store, StoreError};
pub use unpacking::{Unpacked, Unpacking};
pub use verify::{Finding, VerifyReport};

/// Reads an extended attribute of a path in the store (a layer's opaque marker or rootless
/// owner), not following a final symlink; `None` when it is not set.
pub fn read_xattr(path: &std::path::Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let name = std::ffi::CString::new(name)?;
    sys::lgetxattr(&path, &name)
}
