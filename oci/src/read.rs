//! Reading one image input whole: stage it (a tar, gzip'd or not, or a directory), then read it
//! as an OCI layout, or as a `docker save` archive when it is not one.

use std::path::Path;

use crate::contents::Contents;
use crate::error::ReadError;
use crate::{docker, layout, source};

/// Stages `input` into the empty directory `into` and adds what it holds to `out`; the blob files
/// `out` names are inside `into`.
pub fn read(input: &Path, into: &Path, out: &mut Contents) -> Result<(), ReadError> {
    let tree = source::stage(input, into)?;
    if tree.get("index.json").is_some() && tree.get("oci-layout").is_some() {
        return layout::read_oci(input, &tree, out);
    }
    if tree.get("manifest.json").is_some() {
        return docker::read_docker_save(input, &tree, into, out);
    }
    Err(ReadError::UnknownLayout {
        file: input.to_path_buf(),
    })
}
