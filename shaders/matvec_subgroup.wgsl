// matvec_subgroup.wgsl: matmul.wgsl's `matvec` with each row's lanes summed in registers by
// subgroup shuffles, instead of through workgroup memory and a barrier. Composed after
// matmul.wgsl (it reuses matvec_partial and the bindings) into its own module, which is built
// only on adapters with the `subgroup` feature whose subgroups hold whole rows: sizes 8 to 64
// (src/backend/wgpu/matmul.rs checks the adapter's range), so a workgroup of WG invocations is
// WG / size full subgroups of size / MV_LANES rows each: MV_ROWS rows, as `matvec`.
//
// Rows come from the subgroup builtins, not from local_invocation_index, so nothing assumes how
// the driver lays subgroups over the workgroup.

@compute @workgroup_size(WG)
fn matvec_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(subgroup_id) sg: u32, @builtin(subgroup_size) sg_size: u32,
                   @builtin(subgroup_invocation_id) sg_lane: u32) {
    let lane = sg_lane % MV_LANES;
    let row_in = sg * (sg_size / MV_LANES) + sg_lane / MV_LANES;
    let r = (wid.x + wid.y * nwg.x) * MV_ROWS + row_in;
    // Rows past the end give zeros and still shuffle: every lane of the subgroup takes part.
    let acc = matvec_partial(r, lane);
    // A butterfly over the row's MV_LANES adjacent lanes leaves the row's sum in all of them
    // (each lane adds the same two partial sums, in either order, at every step); lane t keeps
    // token t's.
    var mine = 0.0;
    for (var t = 0u; t < p.n_tok; t++) {
        var s = acc.hi[t % 4u];
        if t < 4u {
            s = acc.lo[t];
        }
        s += subgroupShuffleXor(s, 4u);
        s += subgroupShuffleXor(s, 2u);
        s += subgroupShuffleXor(s, 1u);
        if t == lane {
            mine = s;
        }
    }
    if lane < p.n_tok && r < p.rows {
        out[lane * p.out_stride + p.row0 + r] = mine;
    }
}
