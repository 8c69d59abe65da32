//! The figures of an online run: ROC AUC of scores against labels (the Mann-Whitney statistic,
//! ties counted half) and quantiles of a sample.

/// Area under the ROC curve; `None` when the labels are all one class.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let positives = labels.iter().filter(|label| **label > 0.5).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the positives' ranks (1-based, ties sharing their mean rank).
    let mut rank_sum = 0.0f64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        let mean_rank = (start + end) as f64 / 2.0 + 1.0;
        for &index in &order[start..=end] {
            if labels[index] > 0.5 {
                rank_sum += mean_rank;
            }
        }
        start = end + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// The `q` quantile (0..=1) of `values` by the nearest-rank rule; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ordered_pairs_and_ties_half() {
        assert_eq!(auc(&[0.1, 0.9], &[0.0, 1.0]), Some(1.0));
        assert_eq!(auc(&[0.9, 0.1], &[0.0, 1.0]), Some(0.0));
        assert_eq!(auc(&[0.5, 0.5], &[0.0, 1.0]), Some(0.5));
        // Pairs (pos, neg): (0.8, 0.3) yes, (0.8, 0.9) no, (0.4, 0.3) yes, (0.4, 0.9) no.
        assert_eq!(auc(&[0.8, 0.3, 0.4, 0.9], &[1.0, 0.0, 1.0, 0.0]), Some(0.5));
        assert_eq!(auc(&[0.1, 0.2], &[1.0, 1.0]), None);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&values, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
