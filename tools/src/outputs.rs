//! Where the model-writing tools put their files, and what those files
//! carry: checked and prepared before the long work, so a run never fails
//! at its end for a reason it could have seen at its start.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dla_runtime::model::CARD_METADATA_KEY;
use dla_runtime::Model;
use tract_onnx::pb::ModelProto;

use crate::graph;

/// Fails, naming the file, when an output could not be written: its folder
/// is missing or not writable, it is a folder, or it is the input itself.
/// Said before minutes of calibration, not after.
pub fn check_writable<'a>(
    input: &Path,
    outputs: impl IntoIterator<Item = &'a PathBuf>,
) -> anyhow::Result<()> {
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    for path in outputs {
        if path.is_dir() {
            bail!("{}: is a folder; name the file to write", path.display());
        }
        if same_file(path, input) {
            bail!(
                "{}: is the input; write to another file so the original stays",
                path.display()
            );
        }
        let folder = match path.parent().filter(|f| !f.as_os_str().is_empty()) {
            Some(folder) => folder,
            None => Path::new("."),
        };
        if !folder.is_dir() {
            bail!(
                "{}: the folder {} does not exist; create it first",
                path.display(),
                folder.display()
            );
        }
        tempfile::NamedTempFile::new_in(folder)
            .with_context(|| format!("{}: cannot write in {}", path.display(), folder.display()))?;
    }
    Ok(())
}

/// Puts `model`'s card, wherever it came from (metadata, a sidecar, or the
/// defaults of a card-less model), into the metadata of `proto`, the graph a
/// tool edits: every reload of the edited graph and the file written at the
/// end then run as the input did.
pub fn carry_card(proto: &mut ModelProto, model: &Model) -> anyhow::Result<()> {
    graph::set_metadata(
        proto,
        CARD_METADATA_KEY,
        serde_json::to_string(model.card())?,
    );
    Ok(())
}
