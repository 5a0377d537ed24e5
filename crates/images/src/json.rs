//! crit's JSON of an image file, `{"magic": "CORE", "entries": [...]}`,
//! exactly as CRIU 4.2's crit writes it (see [`crate::crit`]).

use std::path::Path;

use crate::crit::{self, DecodeOpts};
use crate::image::ImageError;

/// Decode the image file at `path` into crit's plain JSON (`crit decode`).
pub fn image_to_json(path: &Path) -> Result<String, ImageError> {
    image_to_json_opts(path, DecodeOpts::default())
}

/// Decode the image file at `path` into crit's JSON, plain or `--pretty`.
pub fn image_to_json_opts(path: &Path, opts: DecodeOpts) -> Result<String, ImageError> {
    let data = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageError::Missing {
                path: path.to_path_buf(),
                source,
            }
        } else {
            ImageError::Io {
                path: path.to_path_buf(),
                offset: 0,
                source,
            }
        }
    })?;
    crit::decode(&data, opts).map_err(|source| ImageError::Crit {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}
