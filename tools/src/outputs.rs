//! Where the model-writing tools put their files.

use std::path::PathBuf;

use anyhow::bail;

/// Fails, naming the file, when a folder an output goes into does not exist:
/// said before minutes of calibration, not after.
pub fn check_folders<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> anyhow::Result<()> {
    for path in paths {
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            if !folder.is_dir() {
                bail!(
                    "{}: the folder {} does not exist; create it first",
                    path.display(),
                    folder.display()
                );
            }
        }
    }
    Ok(())
}
