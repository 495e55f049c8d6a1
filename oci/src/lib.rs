//! OCI images as the builder and the seed read them: validated references and digests, media
//! types and manifest documents, image layouts and `docker save` archives read with every digest
//! checked, and the reduction of a multi-platform archive to one platform.

pub mod contents;
mod docker;
pub mod error;
pub mod layout;
pub mod media;
pub mod platform;
pub mod read;
pub mod refs;
pub mod source;

pub use contents::{Contents, Found, ManifestInfo};
pub use docker::SaveEntry;
pub use error::ReadError;
pub use media::{Descriptor, Platform};
pub use platform::{PlatformError, reduce_to_platform};
pub use read::read;
pub use refs::{Digest, ImageName, RefError, Reference, RepoName, Tag};
