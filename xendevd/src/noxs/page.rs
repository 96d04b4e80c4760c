//! A page shared with a guest, as the backends touch it: aligned 32-bit words with volatile
//! semantics (the guest may change any of them at any time) and single bytes. The real pages
//! are grant mappings (`xen_dev::GrantMap`); tests use plain memory standing in for them.

/// A 4 KiB page shared with a guest. Offsets are the backend's own constants (ring layouts),
/// never values read from the page.
pub trait SharedPage {
    fn get32(&self, at: usize) -> u32;
    fn put32(&mut self, at: usize, v: u32);
    fn byte(&self, at: usize) -> u8;
    fn set_byte(&mut self, at: usize, v: u8);

    /// A copy of the page's first `N` bytes, word by word: what a parser gets, so that the
    /// guest changing the page meanwhile changes nothing already read.
    fn snapshot<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, w) in out.chunks_exact_mut(4).enumerate() {
            w.copy_from_slice(&self.get32(i * 4).to_le_bytes());
        }
        out
    }
}

impl SharedPage for xen_dev::GrantMap {
    fn get32(&self, at: usize) -> u32 {
        self.read_u32(at)
    }
    fn put32(&mut self, at: usize, v: u32) {
        self.write_u32(at, v)
    }
    fn byte(&self, at: usize) -> u8 {
        self.bytes()[at]
    }
    fn set_byte(&mut self, at: usize, v: u8) {
        self.bytes_mut()[at] = v;
    }
}

/// Memory standing in for a granted page in tests: shared by the test's guest and the
/// backend under test.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct MemPage(pub std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

#[cfg(test)]
impl MemPage {
    pub fn new() -> MemPage {
        MemPage(std::rc::Rc::new(std::cell::RefCell::new(vec![
            0;
            xen_types::PAGE_SIZE
        ])))
    }
}

#[cfg(test)]
impl Default for MemPage {
    fn default() -> Self {
        MemPage::new()
    }
}

#[cfg(test)]
impl SharedPage for MemPage {
    fn get32(&self, at: usize) -> u32 {
        let p = self.0.borrow();
        u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
    }
    fn put32(&mut self, at: usize, v: u32) {
        self.0.borrow_mut()[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn byte(&self, at: usize) -> u8 {
        self.0.borrow()[at]
    }
    fn set_byte(&mut self, at: usize, v: u8) {
        self.0.borrow_mut()[at] = v;
    }
}
