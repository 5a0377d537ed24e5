//! Reads refuse a symbolic link where an image is expected.

use crust_images::image::{open_nofollow, ImageError, ImageReader, ImageType};

#[test]
fn an_image_that_is_a_symlink_is_refused_naming_it() {
    let dir = std::env::temp_dir().join(format!("crust-nofollow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let real = dir.join("real.img");
    std::fs::write(&real, b"not an image").unwrap();
    let link = dir.join("pstree.img");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = open_nofollow(&link).unwrap_err();
    assert!(matches!(err, ImageError::Symlink { .. }), "{err:?}");
    assert!(err.to_string().contains("pstree.img"), "{err}");
    let err = ImageReader::open_typed(&dir, ImageType::Pstree, "pstree.img")
        .err()
        .unwrap();
    assert!(matches!(err, ImageError::Symlink { .. }), "{err:?}");
    assert!(open_nofollow(&real).is_ok());
    assert!(open_nofollow(&dir.join("missing.img"))
        .unwrap_err()
        .is_missing());
    std::fs::remove_dir_all(&dir).unwrap();
}
