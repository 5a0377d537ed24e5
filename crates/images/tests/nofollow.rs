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

#[test]
fn an_image_another_user_could_have_planted_is_refused() {
    use crust_images::image::file_problem;
    use std::os::unix::fs::PermissionsExt;
    let reg = libc::S_IFREG;
    assert_eq!(file_problem(reg | 0o600, 0, 0), None);
    assert_eq!(file_problem(reg | 0o644, 1000, 1000), None);
    // Root's files are read by an unprivileged caller (images dumped by root).
    assert_eq!(file_problem(reg | 0o600, 0, 1000), None);
    assert!(file_problem(reg | 0o600, 1000, 0)
        .unwrap()
        .contains("uid 1000"));
    assert!(file_problem(reg | 0o666, 0, 0)
        .unwrap()
        .contains("writable by anyone"));
    assert!(file_problem(libc::S_IFIFO | 0o600, 0, 0).is_some());

    let dir = std::env::temp_dir().join(format!("crust-untrusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("core-1.img");
    std::fs::write(&f, b"x").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = open_nofollow(&f).unwrap_err();
    assert!(matches!(err, ImageError::Untrusted { .. }), "{err:?}");
    assert!(
        err.to_string().contains("--allow-unsafe-images-dir"),
        "{err}"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(open_nofollow(&f).is_ok());
    // A FIFO does not block the open: it is refused.
    let fifo = dir.join("pstree.img");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert!(matches!(
        open_nofollow(&fifo).unwrap_err(),
        ImageError::Untrusted { .. }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
