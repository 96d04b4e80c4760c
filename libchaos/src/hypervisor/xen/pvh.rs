//! PVH boot state: a PVH vcpu is an HVM vcpu, loaded through the HVM context interface.

use super::*;

impl XenHypervisor {
    /// Loads the PVH boot vcpu state with `XEN_DOMCTL_sethvmcontext` and enables write-back
    /// MTRRs on every vcpu (no device model sets them), as libxc's `vcpu_hvm()` does.
    pub(super) fn set_pvh_context(&self, dom: DomId, vcpu: u32, rip: u32, rbx: u32) -> Result<()> {
        const GET: &str = "XEN_DOMCTL_gethvmcontext";
        const SET: &str = "XEN_DOMCTL_sethvmcontext";
        if vcpu != 0 {
            return Err(invalid(
                SET,
                format!("vcpu {vcpu}: a PVH guest starts its secondary vcpus itself"),
            ));
        }
        // The save header must be Xen's own (it checks magic, version and cpuid): take it
        // from the domain's current context.
        let size = self
            .domctl(GET, dom, XEN_DOMCTL_GETHVMCONTEXT, HvmContextArg::default())?
            .u
            .size as usize;
        let image: HcallBuf<u8> = self.bufs.zeroed(size).map_err(|e| os(GET, e))?;
        let arg = HvmContextArg {
            size: size as u32,
            _pad: 0,
            buffer: image.addr(),
        };
        let filled = self.domctl(GET, dom, XEN_DOMCTL_GETHVMCONTEXT, arg)?.u.size as usize;
        let image = &image.as_slice()[..filled.min(size)];
        let record = |code: u16| {
            hvm::records(image)
                .find(|(c, i, _)| *c == code && *i == 0)
                .map(|(_, _, p)| p)
        };
        let header = record(hvm::HVM_SAVE_CODE_HEADER)
            .and_then(hvm::parse_header)
            .ok_or_else(|| invalid(GET, format!("domain {dom}: no save header in its context")))?;
        let mut mtrr = record(hvm::HVM_SAVE_CODE_MTRR)
            .and_then(hvm::parse_mtrr)
            .ok_or_else(|| invalid(GET, format!("domain {dom}: no MTRR record in its context")))?;

        // Every sethvmcontext first puts all vcpus down and brings up only those it loads a
        // CPU record for, so the MTRRs go first and the boot CPU last (as in libxc).
        mtrr.msr_mtrr_def_type = hvm::MTRR_DEF_TYPE_WB_ENABLED;
        let vcpus = self.domain_info(dom)?.max_vcpu_id.saturating_add(1);
        for v in 0..vcpus {
            let Ok(instance) = u16::try_from(v) else {
                break;
            };
            self.set_hvm_context(
                dom,
                hvm::OneRecord::new(header, hvm::HVM_SAVE_CODE_MTRR, instance, mtrr),
            )?;
        }
        let cpu = hvm::OneRecord::new(
            header,
            hvm::HVM_SAVE_CODE_CPU,
            0,
            hvm::pvh_boot_cpu(rip, rbx),
        );
        self.set_hvm_context(dom, cpu)?;
        Ok(())
    }

    fn set_hvm_context<R: Copy>(&self, dom: DomId, image: hvm::OneRecord<R>) -> Result<()>
    where
        hvm::OneRecord<R>: Plain,
    {
        const SET: &str = "XEN_DOMCTL_sethvmcontext";
        let buf = self.bufs.one(image).map_err(|e| os(SET, e))?;
        let arg = HvmContextArg {
            size: std::mem::size_of::<hvm::OneRecord<R>>() as u32,
            _pad: 0,
            buffer: buf.addr(),
        };
        self.domctl(SET, dom, XEN_DOMCTL_SETHVMCONTEXT, arg)?;
        Ok(())
    }
}
