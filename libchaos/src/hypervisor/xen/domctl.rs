//! `XEN_DOMCTL_*` and `XEN_SYSCTL_*`: the control interfaces whose layouts Xen versions by an
//! interface number carried in every call. Xen refuses a call whose number is not its own with
//! `-EACCES` (xen/common/domctl.c, sysctl.c), so a toolstack must speak exactly the version of
//! the running hypervisor.
//!
//! Layouts here are those of domctl 0x15 / sysctl 0x15 (Xen 4.17). To add a version, add a
//! variant to [`Interface`], and where a payload changed, a second payload type selected by it.

use super::abi::{plain, Plain};

/// The control interface versions this backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// Xen 4.17: domctl 0x15, sysctl 0x15.
    Xen417,
}

impl Interface {
    /// Every interface this backend knows, newest first (the probe order).
    pub const ALL: &'static [Interface] = &[Interface::Xen417];
    /// For error messages.
    pub const KNOWN: &'static str = "domctl 0x15 / sysctl 0x15 (Xen 4.17)";

    pub fn domctl_version(self) -> u32 {
        match self {
            Interface::Xen417 => 0x15,
        }
    }

    pub fn sysctl_version(self) -> u32 {
        match self {
            Interface::Xen417 => 0x15,
        }
    }
}

/// Domctl versions of other Xen releases, probed only to name what the host runs when it is
/// not a version we speak (0x16 = 4.18, 0x17 = 4.19 and later, older ones below).
pub const PROBE_DOMCTL_VERSIONS: std::ops::RangeInclusive<u32> = 0x0e..=0x20;

// ---------------------------------------------------------------- command numbers
pub const XEN_DOMCTL_CREATEDOMAIN: u32 = 1;
pub const XEN_DOMCTL_DESTROYDOMAIN: u32 = 2;
pub const XEN_DOMCTL_PAUSEDOMAIN: u32 = 3;
pub const XEN_DOMCTL_UNPAUSEDOMAIN: u32 = 4;
pub const XEN_DOMCTL_GETDOMAININFO: u32 = 5;
pub const XEN_DOMCTL_MAX_MEM: u32 = 11;
pub const XEN_DOMCTL_SETVCPUCONTEXT: u32 = 12;
pub const XEN_DOMCTL_MAX_VCPUS: u32 = 15;
pub const XEN_DOMCTL_SETDOMAINHANDLE: u32 = 17;
pub const XEN_DOMCTL_HYPERCALL_INIT: u32 = 22;
pub const XEN_DOMCTL_GETHVMCONTEXT: u32 = 33;
pub const XEN_DOMCTL_SETHVMCONTEXT: u32 = 34;
pub const XEN_DOMCTL_SET_ADDRESS_SIZE: u32 = 35;
pub const XEN_DOMCTL_SETTSCINFO: u32 = 60;
pub const XEN_DOMCTL_SET_PAGING_MEMPOOL_SIZE: u32 = 86;

pub const XEN_SYSCTL_PHYSINFO: u32 = 3;
pub const XEN_SYSCTL_GETDOMAININFOLIST: u32 = 6;

// createdomain flags
pub const XEN_DOMCTL_CDF_HVM: u32 = 1 << 0;
pub const XEN_DOMCTL_CDF_HAP: u32 = 1 << 1;
// arch emulation flags
pub const XEN_X86_EMU_LAPIC: u32 = 1 << 0;

// getdomaininfo flags
pub const XEN_DOMINF_DYING: u32 = 1 << 0;
pub const XEN_DOMINF_SHUTDOWN: u32 = 1 << 2;
pub const XEN_DOMINF_PAUSED: u32 = 1 << 3;
pub const XEN_DOMINF_BLOCKED: u32 = 1 << 4;
pub const XEN_DOMINF_RUNNING: u32 = 1 << 5;
pub const XEN_DOMINF_SHUTDOWNSHIFT: u32 = 16;
pub const XEN_DOMINF_SHUTDOWNMASK: u32 = 255;

/// Size of `struct xen_domctl` (16-byte header + 128-byte union); Xen copies this much in and
/// out whatever the command, so a buffer handed to it must be at least this large.
pub const DOMCTL_SIZE: usize = 144;
/// Size of `struct xen_sysctl` (8-byte header + 128-byte union).
pub const SYSCTL_SIZE: usize = 136;

/// `struct xen_domctl` with the payload of one command in place of the union.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Domctl<P> {
    pub cmd: u32,
    pub interface_version: u32,
    pub domain: u16,
    pub _pad: [u16; 3],
    pub u: P,
}

// SAFETY: a header of integers with explicit padding and a Plain payload at offset 16 (payloads
// are 8-byte aligned at most, so no padding is inserted); `Domctl::new` asserts it fits Xen's
// struct.
unsafe impl<P: Plain> Plain for Domctl<P> {}

impl<P: Plain> Domctl<P> {
    /// Post-monomorphisation check that a payload fits the union.
    const FITS: () = assert!(std::mem::size_of::<Domctl<P>>() <= DOMCTL_SIZE);

    pub fn new(iface: Interface, cmd: u32, domain: u16, u: P) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        Domctl {
            cmd,
            interface_version: iface.domctl_version(),
            domain,
            _pad: [0; 3],
            u,
        }
    }
}

/// `struct xen_sysctl` with one command's payload.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Sysctl<P> {
    pub cmd: u32,
    pub interface_version: u32,
    pub u: P,
}

// SAFETY: as for Domctl: integer header, Plain payload at offset 8, size checked in `new`.
unsafe impl<P: Plain> Plain for Sysctl<P> {}

impl<P: Plain> Sysctl<P> {
    const FITS: () = assert!(std::mem::size_of::<Sysctl<P>>() <= SYSCTL_SIZE);

    pub fn new(iface: Interface, cmd: u32, u: P) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        Sysctl {
            cmd,
            interface_version: iface.sysctl_version(),
            u,
        }
    }
}

/// An empty payload (pause, unpause, destroy).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPayload {
    pub _pad: u64,
}

/// `struct xen_arch_domainconfig` (x86).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchDomainConfig {
    pub emulation_flags: u32,
    pub misc_flags: u32,
}

/// `struct xen_domctl_createdomain` (domctl 0x15).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateDomainV15 {
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub flags: u32,
    pub iommu_opts: u32,
    pub max_vcpus: u32,
    pub max_evtchn_port: u32,
    /// < 0: Xen's default.
    pub max_grant_frames: i32,
    pub max_maptrack_frames: i32,
    /// Grant table version in the low 4 bits (`XEN_DOMCTL_GRANT_version`).
    pub grant_opts: u32,
    pub vmtrace_size: u32,
    pub cpupool_id: u32,
    pub arch: ArchDomainConfig,
}

/// `struct xen_domctl_getdomaininfo` (domctl 0x15).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GetDomainInfoV15 {
    pub domain: u16,
    pub pad1: u16,
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub outstanding_pages: u64,
    pub shr_pages: u64,
    pub paged_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time: u64,
    pub nr_online_vcpus: u32,
    pub max_vcpu_id: u32,
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub cpupool: u32,
    pub gpaddr_bits: u8,
    pub pad2: [u8; 7],
    pub arch_config: ArchDomainConfig,
}

/// `struct xen_domctl_max_mem`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxMem {
    pub max_memkb: u64,
}

/// `struct xen_domctl_max_vcpus`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxVcpus {
    pub max: u32,
    pub _pad: u32,
}

/// `struct xen_domctl_setdomainhandle`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainHandle {
    pub handle: [u8; 16],
}

/// `struct xen_domctl_vcpucontext`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VcpuContextArg {
    pub vcpu: u32,
    pub _pad: u32,
    /// Guest handle of a `vcpu_guest_context`.
    pub ctxt: u64,
}

/// `struct xen_domctl_hypercall_init`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct HypercallInit {
    pub gmfn: u64,
}

/// `struct xen_domctl_hvmcontext`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct HvmContextArg {
    /// IN: size of the buffer; OUT: bytes filled (or needed, with a null buffer).
    pub size: u32,
    pub _pad: u32,
    /// Guest handle of the save image; 0 asks for its size.
    pub buffer: u64,
}

/// `struct xen_domctl_address_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AddressSize {
    pub size: u32,
    pub _pad: u32,
}

/// `struct xen_domctl_tsc_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TscInfo {
    /// `XEN_CPUID_TSC_MODE_*`.
    pub tsc_mode: u32,
    /// 0: the host's frequency.
    pub gtsc_khz: u32,
    pub incarnation: u32,
    pub pad: u32,
    pub elapsed_nsec: u64,
}

/// `struct xen_domctl_paging_mempool`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PagingMempool {
    /// In bytes.
    pub size: u64,
}

/// `struct xen_sysctl_physinfo` (sysctl 0x15).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PhysinfoV15 {
    pub threads_per_core: u32,
    pub cores_per_socket: u32,
    pub nr_cpus: u32,
    pub max_cpu_id: u32,
    pub nr_nodes: u32,
    pub max_node_id: u32,
    pub cpu_khz: u32,
    pub capabilities: u32,
    pub arch_capabilities: u32,
    pub pad: u32,
    pub total_pages: u64,
    pub free_pages: u64,
    pub scrub_pages: u64,
    pub outstanding_pages: u64,
    pub max_mfn: u64,
    pub hw_cap: [u32; 8],
}

/// `struct xen_sysctl_getdomaininfolist`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GetDomainInfoList {
    pub first_domain: u16,
    pub _pad: u16,
    pub max_domains: u32,
    /// Guest handle of a `xen_domctl_getdomaininfo` array.
    pub buffer: u64,
    /// OUT.
    pub num_domains: u32,
    pub _pad2: u32,
}

plain! {
    NoPayload = 8;
    ArchDomainConfig = 8;
    CreateDomainV15 = 64;
    GetDomainInfoV15 = 112;
    MaxMem = 8;
    MaxVcpus = 8;
    DomainHandle = 16;
    VcpuContextArg = 16;
    HypercallInit = 8;
    AddressSize = 8;
    HvmContextArg = 16;
    TscInfo = 24;
    PagingMempool = 8;
    PhysinfoV15 = 112;
    GetDomainInfoList = 24;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    // Offsets from a C program compiled against Xen 4.17.7's public headers (x86_64).
    #[test]
    fn createdomain_layout_matches_c() {
        assert_eq!(offset_of!(CreateDomainV15, handle), 4);
        assert_eq!(offset_of!(CreateDomainV15, flags), 20);
        assert_eq!(offset_of!(CreateDomainV15, max_vcpus), 28);
        assert_eq!(offset_of!(CreateDomainV15, grant_opts), 44);
        assert_eq!(offset_of!(CreateDomainV15, vmtrace_size), 48);
        assert_eq!(offset_of!(CreateDomainV15, cpupool_id), 52);
        assert_eq!(offset_of!(CreateDomainV15, arch), 56);
        assert_eq!(offset_of!(Domctl<CreateDomainV15>, u), 16);
    }

    #[test]
    fn getdomaininfo_layout_matches_c() {
        assert_eq!(offset_of!(GetDomainInfoV15, flags), 4);
        assert_eq!(offset_of!(GetDomainInfoV15, tot_pages), 8);
        assert_eq!(offset_of!(GetDomainInfoV15, shared_info_frame), 48);
        assert_eq!(offset_of!(GetDomainInfoV15, cpu_time), 56);
        assert_eq!(offset_of!(GetDomainInfoV15, nr_online_vcpus), 64);
        assert_eq!(offset_of!(GetDomainInfoV15, max_vcpu_id), 68);
        assert_eq!(offset_of!(GetDomainInfoV15, ssidref), 72);
        assert_eq!(offset_of!(GetDomainInfoV15, handle), 76);
        assert_eq!(offset_of!(GetDomainInfoV15, cpupool), 92);
        assert_eq!(offset_of!(GetDomainInfoV15, gpaddr_bits), 96);
        assert_eq!(offset_of!(GetDomainInfoV15, arch_config), 104);
    }

    #[test]
    fn sysctl_layouts_match_c() {
        assert_eq!(offset_of!(PhysinfoV15, total_pages), 40);
        assert_eq!(offset_of!(PhysinfoV15, free_pages), 48);
        assert_eq!(offset_of!(PhysinfoV15, max_mfn), 72);
        assert_eq!(offset_of!(PhysinfoV15, hw_cap), 80);
        assert_eq!(offset_of!(GetDomainInfoList, max_domains), 4);
        assert_eq!(offset_of!(GetDomainInfoList, buffer), 8);
        assert_eq!(offset_of!(GetDomainInfoList, num_domains), 16);
        assert_eq!(offset_of!(Sysctl<PhysinfoV15>, u), 8);
        assert_eq!(size_of::<Sysctl<PhysinfoV15>>(), 120);
    }

    #[test]
    fn every_payload_fits_the_union() {
        assert!(size_of::<Domctl<GetDomainInfoV15>>() <= DOMCTL_SIZE);
        assert!(size_of::<Domctl<CreateDomainV15>>() <= DOMCTL_SIZE);
        assert!(size_of::<Sysctl<GetDomainInfoList>>() <= SYSCTL_SIZE);
    }

    #[test]
    fn domctl_header_carries_the_interface_version() {
        let d = Domctl::new(
            Interface::Xen417,
            XEN_DOMCTL_PAUSEDOMAIN,
            7,
            NoPayload::default(),
        );
        assert_eq!(d.interface_version, 0x15);
        assert_eq!((d.cmd, d.domain), (3, 7));
    }
}
