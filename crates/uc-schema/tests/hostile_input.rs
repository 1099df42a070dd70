//! Bad metadata must give typed errors, never panics (overflow) or huge allocations.

use uc_schema::{
    local_shape, validate_layout, validate_topology, Layout, Placement, SchemaError, Split,
    SubParam, TensorMeta, Topology,
};

#[test]
fn overflowing_numbers_are_errors_not_panics() {
    let big = u64::MAX / 2 + 1;
    let r = validate_layout(
        "w",
        &[8],
        &Layout::Shard {
            dim: 0,
            parts: 2,
            split: Split::Sizes(vec![big, big]),
        },
    );
    assert!(
        matches!(r, Err(SchemaError::SizesDontSum { expected: 8, .. })),
        "{r:?}"
    );
    let fused = Layout::Fused {
        dim: 0,
        parts: 1,
        subs: vec![
            SubParam {
                size: big,
                split: Split::Even,
            },
            SubParam {
                size: big,
                split: Split::Even,
            },
        ],
    };
    assert!(matches!(
        validate_layout("w", &[8], &fused),
        Err(SchemaError::SubParamMismatch { .. })
    ));
    let zero = Layout::ZeroFlat {
        dp: 2,
        offset: u64::MAX - 1,
        group_numel: 16,
        alignment: 2,
    };
    let r = validate_layout("w", &[u64::MAX, 2], &zero);
    assert!(
        matches!(r, Err(SchemaError::ZeroRangeOutsideGroup { .. })),
        "{r:?}"
    );
    assert_eq!(
        Split::Chunk
            .sizes(u64::MAX, 3)
            .iter()
            .map(|&s| s as u128)
            .sum::<u128>(),
        u64::MAX as u128
    );

    let mesh = Layout::Mesh {
        mesh: vec![1 << 16, 1 << 16],
        placements: vec![Placement::Replicate; 2],
    };
    let r = validate_layout("w", &[4], &mesh);
    assert!(
        matches!(&r, Err(SchemaError::TooManyRanks { what }) if what.contains("`w`")),
        "{r:?}"
    );
    let nested = Layout::Nested {
        outer: Box::new(Layout::Replicated { ranks: 1 << 20 }),
        inner: vec![Layout::Replicated { ranks: 1 << 20 }],
    };
    assert!(matches!(
        validate_layout("w", &[4], &nested),
        Err(SchemaError::TooManyRanks { .. })
    ));

    let topo = Topology::new(&[("dp", 1 << 16), ("tp", 1 << 16)], 1);
    assert!(matches!(
        validate_topology(&topo),
        Err(SchemaError::TooManyRanks { .. })
    ));
    assert_eq!(topo.world_size(), u32::MAX);
    let _ = topo.rank(&[u32::MAX, u32::MAX]);

    let t = TensorMeta::new(
        "w",
        uc_schema::DType::F64,
        vec![u64::MAX, 4],
        uc_schema::Role::Param,
    );
    assert_eq!(t.numel(), u64::MAX);
    assert_eq!(t.nbytes(), u64::MAX);
}

#[test]
fn huge_part_counts_do_not_allocate() {
    // Four billion parts: validating or asking one rank's shape must not build a 32 GB size list.
    let parts = u32::MAX;
    for split in [Split::Even, Split::Chunk, Split::Grain { grain: 8 }] {
        let layout = Layout::Shard {
            dim: 0,
            parts,
            split: split.clone(),
        };
        let _ = validate_layout("w", &[0, 4], &layout);
        let _ = validate_layout("w", &[12, 4], &layout);
        assert_eq!(local_shape(&[12, 4], &layout, 5)[1], 4);
        assert_eq!(split.part(12, parts, parts - 1), 0);
    }
    let mesh = Layout::Mesh {
        mesh: vec![parts],
        placements: vec![Placement::Shard(0)],
    };
    assert_eq!(local_shape(&[10, 4], &mesh, 3), vec![1, 4]);
    assert_eq!(local_shape(&[10, 4], &mesh, 10), vec![0, 4]);
}

#[test]
fn split_part_agrees_with_sizes() {
    for split in [
        Split::Even,
        Split::Chunk,
        Split::Grain { grain: 3 },
        Split::Grain { grain: 0 },
        Split::Sizes(vec![1, 2, 3]),
    ] {
        for size in [0u64, 1, 2, 5, 6, 7, 12, 13] {
            for parts in 1..6u32 {
                let sizes = split.sizes(size, parts);
                for i in 0..parts + 1 {
                    assert_eq!(
                        split.part(size, parts, i),
                        sizes.get(i as usize).copied().unwrap_or(0),
                        "{split:?} size {size} parts {parts} index {i}"
                    );
                }
            }
        }
    }
}
