//! Tests of the planner: the layout pairs the recipes use move every byte bit-exactly, and over
//! random layouts no destination byte is sent twice and none is missed.

use super::layout::{Layout, ParamSpec, Placement};
use super::local::{apply, buffer_from_whole};
use super::plan::{plan, PlanCache};
use proptest::prelude::*;

/// A small Llama-shaped parameter list (f32).
fn llama_params(layers: usize, hidden: u64, ffn: u64, vocab: u64) -> Vec<ParamSpec> {
    let mut params = vec![ParamSpec::new(
        "model.embed_tokens.weight",
        &[vocab, hidden],
        4,
    )];
    for layer in 0..layers {
        let p = |name: &str| format!("model.layers.{layer}.{name}");
        params.push(ParamSpec::new(p("input_layernorm.weight"), &[hidden], 4));
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            params.push(ParamSpec::new(
                p(&format!("self_attn.{name}.weight")),
                &[hidden, hidden],
                4,
            ));
        }
        params.push(ParamSpec::new(p("mlp.gate_proj.weight"), &[ffn, hidden], 4));
        params.push(ParamSpec::new(p("mlp.up_proj.weight"), &[ffn, hidden], 4));
        params.push(ParamSpec::new(p("mlp.down_proj.weight"), &[hidden, ffn], 4));
    }
    params.push(ParamSpec::new("model.norm.weight", &[hidden], 4));
    params
}

/// Distinct bytes for every element of every parameter.
fn whole(params: &[ParamSpec]) -> Vec<Vec<u8>> {
    params
        .iter()
        .enumerate()
        .map(|(index, param)| {
            (0..param.elements() * param.elem_bytes)
                .map(|byte| ((byte * 131 + index as u64 * 7919) % 251) as u8)
                .collect()
        })
        .collect()
}

fn check_pair(params: &[ParamSpec], src: &Layout, dst: &Layout, bucket: u64) {
    let data = whole(params);
    let sources: Vec<Vec<u8>> = (0..src.ranks())
        .map(|r| buffer_from_whole(src, params, r, &data).unwrap())
        .collect();
    let made = plan(params, src, dst, bucket).expect("plan");
    let received = apply(&made, &sources).expect("apply");
    for (rank, got) in received.iter().enumerate() {
        let expected = buffer_from_whole(dst, params, rank, &data).unwrap();
        assert!(*got == expected, "destination rank {rank} differs");
    }
    let moved: u64 = made.total_bytes();
    let needed: u64 = made.dst_bytes.iter().sum();
    assert_eq!(moved, needed, "every destination byte exactly once");
    for bucket in &made.buckets {
        assert!(
            bucket.bytes
                <= bucket
                    .transfers
                    .iter()
                    .map(|t| t.elements() * 4)
                    .sum::<u64>()
        );
    }
}

#[test]
fn the_recipe_layout_pairs_are_bit_exact() {
    let params = llama_params(2, 16, 24, 40);
    let bucket = 4096;
    check_pair(
        &params,
        &Layout::fsdp(2),
        &Layout::tensor_parallel(2, 2),
        bucket,
    );
    check_pair(
        &params,
        &Layout::tensor_parallel(4, 1),
        &Layout::tensor_parallel(2, 1),
        bucket,
    );
    check_pair(
        &params,
        &Layout::tensor_parallel(2, 1),
        &Layout::replicated(3),
        bucket,
    );
    check_pair(
        &params,
        &Layout::replicated(1),
        &Layout::tensor_parallel(4, 1),
        bucket,
    );
}

#[test]
fn load_spreads_over_replicas_and_buckets_respect_their_size() {
    let params = llama_params(2, 16, 24, 40);
    let made = plan(
        &params,
        &Layout::replicated(2),
        &Layout::tensor_parallel(2, 2),
        1024,
    )
    .unwrap();
    let sent = made.bytes_per_source();
    let (low, high) = (
        sent.iter().min().copied().unwrap(),
        sent.iter().max().copied().unwrap(),
    );
    assert!(
        high - low <= high / 4,
        "two full replicas share the sending: {sent:?}"
    );
    assert!(
        made.buckets.iter().all(|bucket| bucket.bytes <= 1024),
        "buckets stay under 1 KiB"
    );
}

#[test]
fn plans_are_cached_per_layout_pair() {
    let params = llama_params(1, 8, 8, 8);
    let cache = PlanCache::new();
    let a = cache
        .get(
            &params,
            &Layout::fsdp(2),
            &Layout::tensor_parallel(2, 1),
            1 << 20,
        )
        .unwrap();
    let b = cache
        .get(
            &params,
            &Layout::fsdp(2),
            &Layout::tensor_parallel(2, 1),
            1 << 20,
        )
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    cache
        .get(&params, &Layout::fsdp(2), &Layout::replicated(1), 1 << 20)
        .unwrap();
    assert_eq!(cache.len(), 2);
}

#[test]
fn impossible_layouts_are_errors() {
    let params = vec![ParamSpec::new("w", &[4], 4)];
    fn split_dim_3(_: &ParamSpec) -> Placement {
        Placement::Split {
            dim: 3,
            axis: "tp".into(),
        }
    }
    let bad = Layout::custom(vec![("tp".into(), 2)], split_dim_3);
    assert!(plan(&params, &bad, &Layout::replicated(1), 1 << 20)
        .unwrap_err()
        .to_string()
        .contains("dimension 3"));
    fn unknown_axis(_: &ParamSpec) -> Placement {
        Placement::Flat {
            axis: "nope".into(),
        }
    }
    let bad = Layout::custom(vec![("tp".into(), 2)], unknown_axis);
    assert!(plan(&params, &Layout::replicated(1), &bad, 1 << 20).is_err());
}

fn random_rule(seed: u64) -> fn(&ParamSpec) -> Placement {
    // A rule per seed class: each parameter's placement then depends on its name's hash.
    fn pick(param: &ParamSpec, salt: u64) -> Placement {
        let hash = param
            .name
            .bytes()
            .fold(salt, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        match hash % 4 {
            0 => Placement::Replicated,
            1 => Placement::Flat { axis: "a".into() },
            2 => Placement::Split {
                dim: (hash as usize / 4) % param.shape.len(),
                axis: "b".into(),
            },
            _ => Placement::Split {
                dim: (hash as usize / 7) % param.shape.len(),
                axis: "a".into(),
            },
        }
    }
    const RULES: [fn(&ParamSpec) -> Placement; 3] =
        [|p| pick(p, 1), |p| pick(p, 2), |p| pick(p, 3)];
    RULES[(seed % 3) as usize]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_layouts_move_every_byte_exactly_once(
        shapes in proptest::collection::vec(proptest::collection::vec(1u64..7, 1..4), 1..5),
        src_axes in (1usize..4, 1usize..4),
        dst_axes in (1usize..4, 1usize..4),
        rules in (0u64..3, 0u64..3),
        bucket in 8u64..200,
    ) {
        let params: Vec<ParamSpec> = shapes.iter().enumerate().map(|(i, shape)| ParamSpec::new(format!("p{i}"), shape, 4)).collect();
        let src = Layout::custom(vec![("a".into(), src_axes.0), ("b".into(), src_axes.1)], random_rule(rules.0));
        let dst = Layout::custom(vec![("a".into(), dst_axes.0), ("b".into(), dst_axes.1)], random_rule(rules.1));
        let made = plan(&params, &src, &dst, bucket).expect("plan");
        // No destination element twice, every one covered.
        for rank in 0..dst.ranks() {
            let mut covered = vec![0u32; (made.dst_bytes[rank] / 4) as usize];
            for bucket in made.buckets.iter().filter(|b| b.dst == rank) {
                for transfer in &bucket.transfers {
                    let base = made.dst_offsets[rank][transfer.param] / 4;
                    for run in transfer.runs() {
                        for element in 0..run.len {
                            covered[(base + run.dst + element) as usize] += 1;
                        }
                    }
                }
            }
            prop_assert!(covered.iter().all(|count| *count == 1), "rank {}: coverage {:?}", rank, covered);
        }
        // And the bytes are the right ones.
        let data = whole(&params);
        let sources: Vec<Vec<u8>> = (0..src.ranks()).map(|r| buffer_from_whole(&src, &params, r, &data).unwrap()).collect();
        let received = apply(&made, &sources).expect("apply");
        for (rank, got) in received.iter().enumerate() {
            prop_assert_eq!(got, &buffer_from_whole(&dst, &params, rank, &data).unwrap());
        }
    }
}
