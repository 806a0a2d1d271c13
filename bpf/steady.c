//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// steady.c: lets BenchmarkVerdicts time, in steady state, a guard path that
// changes its packet (the RST of drop_not_tls) or its stream's slot (the
// first data segment empties it), which BPF_PROG_TEST_RUN's repetitions on
// one buffer would otherwise turn into another path from the second run on.
// Each run of steady_xdp or steady_tc puts back the packet and the slot as
// they were before the first run, then tail-calls the program in
// target_xdp or target_tc: the guard, or the trivial program to time the
// putting back alone.

#include "uapi.h"
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

#define FRAME_MAX 256

// The packet to put back, and the slot: flow_slots[slot] = slot_value.
// The packet is first cut to short_len (the length of the guard's RST),
// then grown back to len, whether the target cut it or not, so that
// putting it back costs the same behind the guard and behind the trivial
// program.
struct steady_state {
	__u32 len;
	__u32 short_len;
	__u32 slot;
	__u32 pad;
	__u64 slot_value;
	__u8 frame[FRAME_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct steady_state);
	__uint(max_entries, 1);
} steady SEC(".maps");

// The guard's flow table; the loader passes the guard's map in its place.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} flow_slots SEC(".maps");

// The program each run ends in, one array per program type: the kernel
// ties a program array to the type of the first program that uses it.
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} target_xdp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} target_tc SEC(".maps");

static __always_inline struct steady_state *restore_slot(void)
{
	__u32 zero = 0;
	struct steady_state *st = bpf_map_lookup_elem(&steady, &zero);
	if (!st)
		return NULL;
	__u64 *slot = bpf_map_lookup_elem(&flow_slots, &st->slot);
	if (slot)
		*slot = st->slot_value;
	return st;
}

// The packet is put back in a global function: the kernel refuses a
// program as a tail call's target when it disagrees with the caller on
// whether its main body may move the packet (bpf_xdp_adjust_tail does),
// and the guard's XDP program never does.
__noinline int restore_xdp(struct xdp_md *ctx)
{
	struct steady_state *st = restore_slot();
	if (!ctx || !st)
		return 0;
	__u32 len = st->len;
	if (len > FRAME_MAX || len < 1 || st->short_len > len)
		return 0;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	long cur = end - data;
	barrier_var(cur); // keeps clang from folding the pointers into 32-bit sums
	if (bpf_xdp_adjust_tail(ctx, (int)st->short_len - (int)cur) ||
	    bpf_xdp_adjust_tail(ctx, (int)len - (int)st->short_len))
		return 0;
	return bpf_xdp_store_bytes(ctx, 0, st->frame, len) == 0;
}

SEC("xdp")
int steady_xdp(struct xdp_md *ctx)
{
	if (!restore_xdp(ctx))
		return XDP_DROP;
	bpf_tail_call(ctx, &target_xdp, 0);
	return XDP_DROP;
}

SEC("tc")
int steady_tc(struct __sk_buff *skb)
{
	struct steady_state *st = restore_slot();
	if (!st)
		return TCX_DROP;
	__u32 len = st->len;
	if (len > FRAME_MAX || len < 1 || st->short_len > len)
		return TCX_DROP;
	if (bpf_skb_change_tail(skb, st->short_len, 0) || bpf_skb_change_tail(skb, len, 0))
		return TCX_DROP;
	if (bpf_skb_store_bytes(skb, 0, st->frame, len, 0))
		return TCX_DROP;
	bpf_tail_call(skb, &target_tc, 0);
	return TCX_DROP;
}
