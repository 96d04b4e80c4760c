//! The ACPI tables a PVH guest finds through `hvm_start_info.rsdp_paddr`: RSDP, XSDT, a
//! hardware-reduced FADT, an empty DSDT and the MADT with one local APIC per vcpu.
//!
//! Linux needs the MADT: without it, it finds no local APIC, keeps one CPU without SMP set-up
//! and never installs the Xen timer, so time stops and every sleep waits forever (a PVH guest
//! has no PIT or HPET). The layouts are the ACPI specification's (6.x); Xen numbers a PVH
//! vcpu's local APIC `2 * vcpu` (hvm/vlapic.c), as libacpi's MADT does.

/// Where the local APIC sits (architectural).
const LAPIC_BASE: u32 = 0xfee0_0000;
/// Xen's limit for HVM and PVH guests (HVM_MAX_VCPUS); it also keeps APIC IDs within a byte.
pub const MAX_VCPUS: u32 = 128;

const HEADER: usize = 36;
const RSDP_LEN: usize = 36;
const FADT_LEN: usize = 276;
/// FADT flags: HW_REDUCED_ACPI (no PM blocks, no SCI, no FACS).
const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// FADT IA-PC boot flags: no VGA, no CMOS RTC (PVH emulates neither).
const FADT_NO_VGA: u16 = 1 << 2;
const FADT_NO_CMOS_RTC: u16 = 1 << 5;

/// The tables laid out from guest-physical address `base`, in one buffer (RSDP first, at
/// `base`, which must be 16-byte aligned). `vcpus` must be 1..=[`MAX_VCPUS`].
pub fn tables(base: u64, vcpus: u32) -> Vec<u8> {
    let madt_len = HEADER + 8 + 8 * vcpus as usize;
    let xsdt_off = RSDP_LEN.next_multiple_of(16);
    let xsdt_len = HEADER + 2 * 8;
    let fadt_off = (xsdt_off + xsdt_len).next_multiple_of(16);
    let dsdt_off = (fadt_off + FADT_LEN).next_multiple_of(16);
    let madt_off = (dsdt_off + HEADER).next_multiple_of(16);
    let mut out = vec![0u8; madt_off + madt_len];
    let at = |off: usize| base + off as u64;

    // RSDP (ACPI 2.0+): its own two checksums, no RSDT.
    {
        let r = &mut out[..RSDP_LEN];
        r[..8].copy_from_slice(b"RSD PTR ");
        r[9..15].copy_from_slice(b"CHAOS ");
        r[15] = 2;
        r[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
        r[24..32].copy_from_slice(&at(xsdt_off).to_le_bytes());
        r[8] = checksum(&r[..20]);
        r[32] = checksum(r);
    }
    // XSDT: the FADT, then the MADT.
    {
        let x = &mut out[xsdt_off..xsdt_off + xsdt_len];
        header(x, b"XSDT", 1);
        x[HEADER..HEADER + 8].copy_from_slice(&at(fadt_off).to_le_bytes());
        x[HEADER + 8..HEADER + 16].copy_from_slice(&at(madt_off).to_le_bytes());
        seal(x);
    }
    // FADT 6.0, hardware-reduced: only the DSDT's address and the flags matter.
    {
        let f = &mut out[fadt_off..fadt_off + FADT_LEN];
        header(f, b"FACP", 6);
        f[40..44].copy_from_slice(&(at(dsdt_off) as u32).to_le_bytes());
        f[109..111].copy_from_slice(&(FADT_NO_VGA | FADT_NO_CMOS_RTC).to_le_bytes());
        f[112..116].copy_from_slice(&FADT_HW_REDUCED_ACPI.to_le_bytes());
        f[140..148].copy_from_slice(&at(dsdt_off).to_le_bytes());
        seal(f);
    }
    // DSDT: no AML (the guest has no devices ACPI describes).
    {
        let d = &mut out[dsdt_off..dsdt_off + HEADER];
        header(d, b"DSDT", 2);
        seal(d);
    }
    // MADT: the local APIC address, no 8259s, a processor local APIC entry per vcpu.
    {
        let m = &mut out[madt_off..madt_off + madt_len];
        header(m, b"APIC", 4);
        m[HEADER..HEADER + 4].copy_from_slice(&LAPIC_BASE.to_le_bytes());
        for vcpu in 0..vcpus as usize {
            let e = &mut m[HEADER + 8 + 8 * vcpu..HEADER + 16 + 8 * vcpu];
            e[0] = 0; // type: processor local APIC
            e[1] = 8;
            e[2] = vcpu as u8; // ACPI processor UID
            e[3] = (2 * vcpu) as u8; // APIC ID
            e[4..8].copy_from_slice(&1u32.to_le_bytes()); // enabled
        }
        seal(m);
    }
    out
}

/// A table header without its length and checksum (see [`seal`]).
fn header(t: &mut [u8], signature: &[u8; 4], revision: u8) {
    let len = t.len() as u32;
    t[..4].copy_from_slice(signature);
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[8] = revision;
    t[10..16].copy_from_slice(b"CHAOS ");
    t[16..24].copy_from_slice(b"CHAOSPVH");
    t[24..28].copy_from_slice(&1u32.to_le_bytes());
    t[28..32].copy_from_slice(b"CHAO");
    t[32..36].copy_from_slice(&1u32.to_le_bytes());
}

/// Sets the checksum byte so that the table's bytes sum to zero.
fn seal(t: &mut [u8]) {
    t[9] = 0;
    t[9] = checksum(t);
}

/// The byte that makes `bytes` sum to zero (mod 256).
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le32(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    fn le64(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x)) == 0
    }

    /// The table at guest address `paddr` of tables built at `base`, checked: its length and
    /// checksum.
    fn table<'a>(all: &'a [u8], base: u64, paddr: u64, signature: &[u8]) -> &'a [u8] {
        let off = (paddr - base) as usize;
        assert_eq!(&all[off..off + 4], signature);
        let len = le32(all, off + 4) as usize;
        let t = &all[off..off + len];
        assert!(
            sums_to_zero(t),
            "{:?} checksum",
            std::str::from_utf8(signature)
        );
        t
    }

    #[test]
    fn the_tables_chain_from_the_rsdp_to_a_local_apic_per_vcpu() {
        let base = 0xfe_c000;
        let all = tables(base, 3);
        let rsdp = &all[..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "revision 2: the XSDT is used");
        assert!(sums_to_zero(&rsdp[..20]));
        assert!(sums_to_zero(rsdp));
        let xsdt = table(&all, base, le64(rsdp, 24), b"XSDT");
        assert_eq!(xsdt.len(), 36 + 16);
        let fadt = table(&all, base, le64(xsdt, 36), b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!(le32(fadt, 112) & (1 << 20), 1 << 20, "hardware-reduced");
        let dsdt_at = le64(fadt, 140);
        assert_eq!(u64::from(le32(fadt, 40)), dsdt_at);
        assert_eq!(table(&all, base, dsdt_at, b"DSDT").len(), 36);
        let madt = table(&all, base, le64(xsdt, 44), b"APIC");
        assert_eq!(le32(madt, 36), 0xfee0_0000);
        assert_eq!(madt.len(), 36 + 8 + 3 * 8);
        for vcpu in 0..3 {
            let e = &madt[44 + 8 * vcpu..52 + 8 * vcpu];
            assert_eq!(&e[..4], &[0, 8, vcpu as u8, 2 * vcpu as u8]);
            assert_eq!(le32(e, 4), 1, "enabled");
        }
    }

    #[test]
    fn the_largest_guest_fits_in_one_page() {
        let all = tables(0, MAX_VCPUS);
        assert!(all.len() <= 4096, "{} bytes", all.len());
        let madt_at = le64(&all, 48 + 44);
        let madt = table(&all, 0, madt_at, b"APIC");
        assert_eq!(madt[44 + 8 * 127 + 3], 254, "the last APIC ID");
    }
}
