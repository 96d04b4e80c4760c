//! xl.cfg's device lists: `vif` and `disk`.

use super::Ctx;
use crate::config::disk::{parse_disk_spec, DiskSpecError};
use crate::config::error::ConfigError;
use crate::config::syntax::Value;
use crate::config::validate::check_disk;
use crate::config::vif::parse_vif_spec;
use crate::config::DiskConfig;

impl Ctx<'_> {
    pub(super) fn vifs(&mut self) -> Result<Vec<crate::config::VifConfig>, ConfigError> {
        let Some(e) = self.get("vif") else {
            return Ok(Vec::new());
        };
        let Value::List(items) = &e.setting.value else {
            return Err(self.invalid(
                e,
                format!(
                    "expected a list of vif specs, got {}",
                    e.setting.value.describe()
                ),
            ));
        };
        let at = e.at.clone();
        let mut vifs = Vec::new();
        let mut notes = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Str(spec) = item else {
                return Err(self.invalid(
                    e,
                    format!(
                        "vif {i}: expected a \"spec string\", got {}",
                        item.describe()
                    ),
                ));
            };
            let parsed = parse_vif_spec(spec, i)
                .map_err(|m| self.invalid(e, format!("vif {i} ({spec:?}): {m}")))?;
            notes.extend(parsed.warnings.into_iter().map(|w| format!("vif {i}: {w}")));
            vifs.push(parsed.vif);
        }
        for n in notes {
            self.warn(&at, "vif", n);
        }
        Ok(vifs)
    }

    /// xl `disk`: a list of disk spec strings (xl-disk-configuration(5)).
    pub(super) fn disks(&mut self) -> Result<Vec<DiskConfig>, ConfigError> {
        let Some(e) = self.get("disk") else {
            return Ok(Vec::new());
        };
        let Value::List(items) = &e.setting.value else {
            return Err(self.invalid(
                e,
                format!(
                    "expected a list of disk specs, got {}",
                    e.setting.value.describe()
                ),
            ));
        };
        let at = e.at.clone();
        let mut disks = Vec::new();
        let mut notes = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Str(spec) = item else {
                return Err(self.invalid(
                    e,
                    format!(
                        "disk {i}: expected a \"spec string\", got {}",
                        item.describe()
                    ),
                ));
            };
            let parsed = parse_disk_spec(spec).map_err(|err| {
                let message = format!("disk {i} ({spec:?}): {err}");
                match err {
                    DiskSpecError::Invalid(_) => self.invalid(e, message),
                    DiskSpecError::Unsupported(_) => ConfigError::Unsupported {
                        at: e.at.clone(),
                        key: e.setting.key.clone(),
                        message,
                    },
                }
            })?;
            // The number and the path are checked here too, so that the error quotes the spec.
            check_disk(&parsed.disk)
                .map_err(|m| self.invalid(e, format!("disk {i} ({spec:?}): {m}")))?;
            notes.extend(
                parsed
                    .warnings
                    .into_iter()
                    .map(|w| format!("disk {i}: {w}")),
            );
            disks.push(parsed.disk);
        }
        for n in notes {
            self.warn(&at, "disk", n);
        }
        Ok(disks)
    }
}
