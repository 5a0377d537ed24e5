//! The UTS namespace: its host and domain names (`utsns-ID.img`, one
//! `UtsnsEntry`). Read and set by a crust thread that joined the
//! namespace.

use super::ids::NsKind;
use super::in_ns;
use crate::util::{read_one, sys_err, write_image};
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::utsns::UtsnsEntry;
use std::path::Path;

/// The kernel's limit on each name (__NEW_UTS_LEN).
const MAX_NAME: usize = 64;

/// Dump the names of the UTS namespace process `pid` is in, as id `id`.
pub(crate) fn dump(dir: &Path, pid: i32, id: u32) -> Result<(), Error> {
    let (node, domain) = in_ns(pid, &[NsKind::Uts], || {
        crust_sys::ns::uts_names().map_err(sys_err(pid, "uname in its UTS namespace"))
    })?;
    let e = UtsnsEntry {
        nodename: String::from_utf8_lossy(&node).into_owned(),
        domainname: String::from_utf8_lossy(&domain).into_owned(),
        ..Default::default()
    };
    log::debug!("UTS namespace {id}: {:?} / {:?}", e.nodename, e.domainname);
    write_image(dir, ImageType::Utsns, id as u64, &[e])
}

/// A UTS namespace to make: its names, checked.
#[derive(Debug)]
pub(crate) struct Uts {
    id: u32,
    nodename: String,
    domainname: String,
}

impl Uts {
    /// Read `utsns-ID.img`.
    pub(crate) fn load(dir: &Path, id: u32) -> Result<Uts, Error> {
        let e: UtsnsEntry = read_one(dir, ImageType::Utsns, id as u64)?;
        for (what, name) in [("host", &e.nodename), ("domain", &e.domainname)] {
            if name.len() > MAX_NAME || name.contains('\0') {
                return Err(Error::BadImage {
                    dir: dir.to_path_buf(),
                    why: format!(
                        "utsns-{id}.img: the {what} name {name:?} is longer than {MAX_NAME} bytes or holds a NUL"
                    ),
                });
            }
        }
        Ok(Uts {
            id,
            nodename: e.nodename,
            domainname: e.domainname,
        })
    }

    /// Set the names in the new UTS namespace process `pid` is in.
    pub(crate) fn prepare(&self, pid: i32) -> Result<(), Error> {
        log::debug!(
            "UTS namespace {}: host name {:?}, domain name {:?}",
            self.id,
            self.nodename,
            self.domainname
        );
        in_ns(pid, &[NsKind::Uts], || {
            crust_sys::ns::set_hostname(self.nodename.as_bytes())
                .map_err(sys_err(pid, "sethostname in its UTS namespace"))?;
            crust_sys::ns::set_domainname(self.domainname.as_bytes())
                .map_err(sys_err(pid, "setdomainname in its UTS namespace"))
        })
    }
}
