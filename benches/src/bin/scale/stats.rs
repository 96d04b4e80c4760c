//! Medians and the summary lines the harness prints.

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// The running median over a window of `w` samples (centred where it can be), as (x, median)
/// points: the line drawn through a tool's dots.
pub fn rolling_median(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let w = w.max(1);
    (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(w / 2);
            let hi = (lo + w).min(points.len());
            let lo = hi.saturating_sub(w);
            let ys: Vec<f64> = points[lo..hi].iter().map(|p| p.1).collect();
            (points[i].0, median(&ys).unwrap_or(f64::NAN))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn rolling_median_follows_a_step_and_ignores_one_spike() {
        let mut pts: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64, if i < 10 { 1.0 } else { 5.0 }))
            .collect();
        pts[3].1 = 100.0;
        let m = rolling_median(&pts, 5);
        assert_eq!(m.len(), 20);
        assert_eq!(m[3].1, 1.0);
        assert_eq!(m[0].1, 1.0);
        assert_eq!(m[19].1, 5.0);
    }
}
