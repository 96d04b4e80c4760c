//! The PV console ring (xen/include/public/io/console.h, `struct xencons_interface`): 1 KiB of
//! input and 2 KiB of output in one page shared with the guest, with free-running indexes.
//! The guest writes every byte of this page, so every index read here is checked before use.

/// Offsets in the page.
const IN: usize = 0;
const IN_SIZE: u32 = 1024;
const OUT: usize = 1024;
const OUT_SIZE: u32 = 2048;
const IN_CONS: usize = 3072;
const IN_PROD: usize = 3076;
const OUT_CONS: usize = 3080;
const OUT_PROD: usize = 3084;

use super::page::SharedPage;

/// Takes what the guest wrote to its output ring into `out`; returns whether it consumed
/// anything (then the guest is notified, it may be waiting for room). Indexes that claim more
/// than the ring holds (a guest's bug or malice) keep only the ring's worth, as xenconsoled.
pub fn drain_output(page: &mut impl SharedPage, out: &mut Vec<u8>) -> bool {
    let prod = page.get32(OUT_PROD);
    let mut cons = page.get32(OUT_CONS);
    if prod == cons {
        return false;
    }
    if prod.wrapping_sub(cons) > OUT_SIZE {
        cons = prod.wrapping_sub(OUT_SIZE);
    }
    // The bytes are read after the index: the guest wrote them before it moved the index.
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    while cons != prod {
        out.push(page.byte(OUT + (cons % OUT_SIZE) as usize));
        cons = cons.wrapping_add(1);
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    page.put32(OUT_CONS, cons);
    true
}

/// Puts keyboard input into the guest's input ring, as much as fits; returns how many bytes
/// went in.
pub fn feed_input(page: &mut impl SharedPage, data: &[u8]) -> usize {
    let cons = page.get32(IN_CONS);
    let mut prod = page.get32(IN_PROD);
    let used = prod.wrapping_sub(cons);
    if used > IN_SIZE {
        // Nonsense indexes: write nothing rather than guess.
        return 0;
    }
    let room = (IN_SIZE - used) as usize;
    let n = room.min(data.len());
    for &b in &data[..n] {
        page.set_byte(IN + (prod % IN_SIZE) as usize, b);
        prod = prod.wrapping_add(1);
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    page.put32(IN_PROD, prod);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Page(Vec<u8>);

    impl SharedPage for Page {
        fn get32(&self, at: usize) -> u32 {
            u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap())
        }
        fn put32(&mut self, at: usize, v: u32) {
            self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn byte(&self, at: usize) -> u8 {
            self.0[at]
        }
        fn set_byte(&mut self, at: usize, v: u8) {
            self.0[at] = v;
        }
    }

    /// The guest's side: writes `s` into its output ring.
    fn guest_writes(p: &mut Page, s: &[u8]) {
        let mut prod = p.get32(OUT_PROD);
        for &b in s {
            p.0[OUT + (prod % OUT_SIZE) as usize] = b;
            prod = prod.wrapping_add(1);
        }
        p.put32(OUT_PROD, prod);
    }

    #[test]
    fn output_is_drained_across_the_wrap_and_indexes_wrap_too() {
        let mut p = Page(vec![0; 4096]);
        // Start near both the ring's end and u32's end.
        p.put32(OUT_CONS, u32::MAX - 2);
        p.put32(OUT_PROD, u32::MAX - 2);
        guest_writes(&mut p, b"hello, world\r\n");
        let mut out = Vec::new();
        assert!(drain_output(&mut p, &mut out));
        assert_eq!(out, b"hello, world\r\n");
        assert_eq!(p.get32(OUT_CONS), p.get32(OUT_PROD));
        assert!(!drain_output(&mut p, &mut out), "nothing new");
    }

    #[test]
    fn a_guest_lying_about_its_indexes_gets_at_most_a_ring_of_output() {
        let mut p = Page(vec![b'x'; 4096]);
        p.put32(OUT_CONS, 0);
        p.put32(OUT_PROD, 1_000_000);
        let mut out = Vec::new();
        assert!(drain_output(&mut p, &mut out));
        assert_eq!(out.len(), OUT_SIZE as usize);
        assert_eq!(p.get32(OUT_CONS), 1_000_000);
    }

    #[test]
    fn input_fills_the_ring_up_to_its_room_and_nonsense_indexes_take_nothing() {
        let mut p = Page(vec![0; 4096]);
        assert_eq!(feed_input(&mut p, b"ls\n"), 3);
        assert_eq!(&p.0[..3], b"ls\n");
        assert_eq!(p.get32(IN_PROD), 3);
        assert_eq!(feed_input(&mut p, &[b'a'; 2000]), 1021, "the rest of 1 KiB");
        p.put32(IN_CONS, 0);
        p.put32(IN_PROD, 5000);
        assert_eq!(feed_input(&mut p, b"x"), 0);
    }
}
