//! Which partly used packs a prune repacks: restic's rule, so a restic user's
//! `--max-unused 5` means the same here.

use std::collections::HashSet;

use crate::id::Id;

/// Of the partly used packs (id, unused bytes, all blob bytes), those to repack so that
/// what stays unused is at most `max_unused` percent of the repository's blob bytes
/// (`live_total` counts every live byte): the most unused per byte first.
pub fn packs_to_repack(
    partly_used: impl Iterator<Item = (Id, u64, u64)>,
    live_total: u64,
    max_unused: f64,
) -> HashSet<Id> {
    let mut packs: Vec<(Id, u64, u64)> = partly_used.collect();
    // unused / (live + unused) <= p %  <=>  unused <= live * p / (100 - p).
    let tolerated = if max_unused >= 100.0 {
        u64::MAX
    } else {
        (live_total as f64 * max_unused / (100.0 - max_unused)) as u64
    };
    let mut unused_left: u64 = packs.iter().map(|(_, unused, _)| unused).sum();
    // Ties by id: the choice does not depend on the order packs were listed in.
    packs.sort_by(|(a, ua, all_a), (b, ub, all_b)| {
        (*ub as u128 * *all_a as u128)
            .cmp(&(*ua as u128 * *all_b as u128))
            .then(a.cmp(b))
    });
    let mut chosen = HashSet::new();
    for (id, unused, _) in packs {
        if unused_left <= tolerated {
            break;
        }
        chosen.insert(id);
        unused_left -= unused;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn chosen(packs: &[(u8, u64, u64)], live: u64, max: f64) -> Vec<u8> {
        let set = packs_to_repack(packs.iter().map(|&(n, u, a)| (id(n), u, a)), live, max);
        let mut v: Vec<u8> = packs
            .iter()
            .map(|p| p.0)
            .filter(|n| set.contains(&id(*n)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn waste_under_the_limit_is_left_alone() {
        // 1000 live bytes, 40 unused in all: 3.8 % <= 5 %.
        assert_eq!(
            chosen(&[(1, 20, 500), (2, 20, 540)], 1000, 5.0),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn the_most_wasteful_packs_go_first_until_the_rest_is_tolerated() {
        // Live 1000 (tolerated 52 at 5 %); unused 300 + 50 + 40 = 390.
        // Pack 1 is 300/600 unused, pack 2 50/500, pack 3 40/360: repack 1 (90 left),
        // then 3 (40/360 > 50/500; 50 left <= 52), and keep 2.
        assert_eq!(
            chosen(&[(1, 300, 600), (2, 50, 500), (3, 40, 360)], 1000, 5.0),
            vec![1, 3]
        );
    }

    #[test]
    fn zero_repacks_every_partly_used_pack_and_one_hundred_none() {
        let packs = [(1, 1, 1000), (2, 999, 1000), (3, 10, 100)];
        assert_eq!(chosen(&packs, 100_000, 0.0), vec![1, 2, 3]);
        assert_eq!(chosen(&packs, 1, 100.0), Vec::<u8>::new());
    }

    #[test]
    fn the_choice_does_not_depend_on_listing_order() {
        let a = [(1, 10, 100), (2, 10, 100), (3, 10, 100)];
        let b = [(3, 10, 100), (1, 10, 100), (2, 10, 100)];
        // Live 400 tolerates 21 unused bytes: one of three equal packs goes.
        assert_eq!(chosen(&a, 400, 5.0), vec![1]);
        assert_eq!(chosen(&b, 400, 5.0), vec![1]);
    }
}
