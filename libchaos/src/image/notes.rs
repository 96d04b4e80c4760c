//! Xen ELF notes (xen/include/public/elfnote.h): what a kernel tells the domain builder about
//! itself. Only notes named "Xen" count. The legacy `__xen_guest` section (pre-2006 kernels) is
//! not read: kernels without notes are refused.

use super::elf::Note;
use super::ImageProblem;

pub const XEN_ELFNOTE_INFO: u32 = 0;
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
pub const XEN_ELFNOTE_LOADER: u32 = 8;
pub const XEN_ELFNOTE_PAE_MODE: u32 = 9;
pub const XEN_ELFNOTE_FEATURES: u32 = 10;
pub const XEN_ELFNOTE_BSD_SYMTAB: u32 = 11;
pub const XEN_ELFNOTE_HV_START_LOW: u32 = 12;
pub const XEN_ELFNOTE_L1_MFN_VALID: u32 = 13;
pub const XEN_ELFNOTE_SUSPEND_CANCEL: u32 = 14;
pub const XEN_ELFNOTE_INIT_P2M: u32 = 15;
pub const XEN_ELFNOTE_MOD_START_PFN: u32 = 16;
pub const XEN_ELFNOTE_SUPPORTED_FEATURES: u32 = 17;
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Feature names a kernel may list in XEN_ELFNOTE_FEATURES, with their XENFEAT_* bit
/// (xen/include/public/features.h); the same set Xen's libelf recognises.
const FEATURE_NAMES: &[(&str, u32)] = &[
    ("writable_page_tables", 0),
    ("writable_descriptor_tables", 1),
    ("auto_translated_physmap", 2),
    ("supervisor_mode_kernel", 3),
    ("pae_pgdir_above_4gb", 4),
    ("hvm_callback_vector", 8),
    ("dom0", 11),
];

/// XENFEAT_auto_translated_physmap: a kernel requiring it cannot run as a classic PV guest.
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;

/// The Xen notes of a kernel. Numeric notes are `None` when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XenNotes {
    /// How many notes named "Xen" were found.
    pub count: usize,
    pub entry: Option<u64>,
    pub hypercall_page: Option<u64>,
    pub virt_base: Option<u64>,
    pub paddr_offset: Option<u64>,
    pub xen_version: Option<String>,
    pub guest_os: Option<String>,
    pub guest_version: Option<String>,
    pub loader: Option<String>,
    pub pae_mode: Option<String>,
    /// The raw FEATURES string ("feat|!required_feat|...").
    pub features: Option<String>,
    /// Bitmap of XENFEAT_* the kernel supports (FEATURES and SUPPORTED_FEATURES combined).
    pub supported_features: u32,
    /// Bitmap of XENFEAT_* the kernel requires ("!name" in FEATURES).
    pub required_features: u32,
    pub hv_start_low: Option<u64>,
    /// INIT_P2M: where the kernel would like the p2m list mapped (parsed, not honoured yet: the
    /// builder places the p2m in the initial mapping, which kernels must accept too).
    pub init_p2m: Option<u64>,
    /// MOD_START_PFN: the kernel accepts a ramdisk given by frame number, outside the mapping.
    pub mod_start_pfn: bool,
    pub suspend_cancel: bool,
    pub bsd_symtab: bool,
    /// PVH entry point (32-bit physical address).
    pub phys32_entry: Option<u32>,
    /// chaos's own note (owner "chaos"): the NoXS ABI version the kernel implements
    /// (noxs/ABI.md section 1).
    pub chaos_noxs: Option<u32>,
}

fn string(desc: &[u8]) -> String {
    let end = desc.iter().position(|&c| c == 0).unwrap_or(desc.len());
    String::from_utf8_lossy(&desc[..end]).into_owned()
}

fn numeric(name: &'static str, desc: &[u8]) -> Result<u64, ImageProblem> {
    let mut a = [0u8; 8];
    match desc.len() {
        1 | 2 | 4 | 8 => {
            a[..desc.len()].copy_from_slice(desc);
            Ok(u64::from_le_bytes(a))
        }
        n => Err(ImageProblem::BadNote {
            name,
            reason: format!("numeric value of {n} bytes (expected 1, 2, 4 or 8)"),
        }),
    }
}

/// Sets the bits of the FEATURES string into `supported` / `required`.
fn parse_features(s: &str, supported: &mut u32, required: &mut u32) -> Result<(), ImageProblem> {
    for item in s.split('|').map(str::trim).filter(|f| !f.is_empty()) {
        let (name, is_required) = match item.strip_prefix('!') {
            Some(n) => (n, true),
            None => (item, false),
        };
        match FEATURE_NAMES.iter().find(|(n, _)| *n == name) {
            Some(&(_, bit)) => {
                *supported |= 1 << bit;
                if is_required {
                    *required |= 1 << bit;
                }
            }
            // Unknown optional features are ignored; an unknown requirement cannot be met.
            None if is_required => {
                return Err(ImageProblem::BadNote {
                    name: "FEATURES",
                    reason: format!("requires unknown feature '{name}'"),
                })
            }
            None => {}
        }
    }
    Ok(())
}

impl XenNotes {
    /// Reads the Xen notes among `notes` (others are skipped).
    pub fn from_notes(notes: &[Note<'_>]) -> Result<XenNotes, ImageProblem> {
        let mut x = XenNotes::default();
        for note in notes {
            let name = note.name.strip_suffix(&[0]).unwrap_or(note.name);
            if name == noxs::NOTE_OWNER && note.kind == noxs::NOTE_NOXS {
                let v = numeric("chaos NOXS", note.desc)?;
                x.chaos_noxs = Some(u32::try_from(v).map_err(|_| ImageProblem::BadNote {
                    name: "chaos NOXS",
                    reason: format!("version {v} is not a 32-bit number"),
                })?);
                continue;
            }
            if name != b"Xen" {
                continue;
            }
            x.count += 1;
            let d = note.desc;
            match note.kind {
                XEN_ELFNOTE_ENTRY => x.entry = Some(numeric("ENTRY", d)?),
                XEN_ELFNOTE_HYPERCALL_PAGE => {
                    x.hypercall_page = Some(numeric("HYPERCALL_PAGE", d)?)
                }
                XEN_ELFNOTE_VIRT_BASE => x.virt_base = Some(numeric("VIRT_BASE", d)?),
                XEN_ELFNOTE_PADDR_OFFSET => x.paddr_offset = Some(numeric("PADDR_OFFSET", d)?),
                XEN_ELFNOTE_XEN_VERSION => x.xen_version = Some(string(d)),
                XEN_ELFNOTE_GUEST_OS => x.guest_os = Some(string(d)),
                XEN_ELFNOTE_GUEST_VERSION => x.guest_version = Some(string(d)),
                XEN_ELFNOTE_LOADER => x.loader = Some(string(d)),
                XEN_ELFNOTE_PAE_MODE => x.pae_mode = Some(string(d)),
                XEN_ELFNOTE_FEATURES => {
                    let s = string(d);
                    parse_features(&s, &mut x.supported_features, &mut x.required_features)?;
                    x.features = Some(s);
                }
                XEN_ELFNOTE_BSD_SYMTAB => x.bsd_symtab = string(d) == "yes",
                XEN_ELFNOTE_HV_START_LOW => x.hv_start_low = Some(numeric("HV_START_LOW", d)?),
                XEN_ELFNOTE_SUSPEND_CANCEL => x.suspend_cancel = numeric("SUSPEND_CANCEL", d)? != 0,
                XEN_ELFNOTE_INIT_P2M => x.init_p2m = Some(numeric("INIT_P2M", d)?),
                XEN_ELFNOTE_MOD_START_PFN => x.mod_start_pfn = numeric("MOD_START_PFN", d)? != 0,
                XEN_ELFNOTE_SUPPORTED_FEATURES => {
                    // An array of 32-bit submaps; Xen defines only submap 0.
                    if let Some(s) = d.get(..4) {
                        x.supported_features |= u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    }
                }
                XEN_ELFNOTE_PHYS32_ENTRY => {
                    let v = numeric("PHYS32_ENTRY", d)?;
                    let v = u32::try_from(v).map_err(|_| ImageProblem::BadNote {
                        name: "PHYS32_ENTRY",
                        reason: format!("{v:#x} is above 4 GiB"),
                    })?;
                    x.phys32_entry = Some(v);
                }
                // INFO, L1_MFN_VALID and unknown types carry nothing the builder uses.
                _ => {}
            }
        }
        Ok(x)
    }

    /// Whether the kernel lists `XENFEAT_<bit>` as required.
    pub fn requires(&self, bit: u32) -> bool {
        bit < 32 && self.required_features & (1 << bit) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_string() {
        let (mut s, mut r) = (0, 0);
        parse_features(
            "writable_page_tables|!pae_pgdir_above_4gb|mystery",
            &mut s,
            &mut r,
        )
        .unwrap();
        assert_eq!(s, 0b10001);
        assert_eq!(r, 0b10000);
        let e = parse_features("!mystery", &mut s, &mut r).unwrap_err();
        assert!(e.to_string().contains("mystery"), "{e}");
    }

    #[test]
    fn numeric_sizes() {
        assert_eq!(numeric("X", &[1]).unwrap(), 1);
        assert_eq!(numeric("X", &[1, 2, 0, 0]).unwrap(), 0x201);
        assert_eq!(
            numeric("X", &0x1122334455667788u64.to_le_bytes()).unwrap(),
            0x1122334455667788
        );
        assert!(numeric("X", &[1, 2, 3]).is_err());
    }
}
