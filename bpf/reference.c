//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// reference.c: the yardstick BenchmarkVerdicts measures the guard against.
// It parses exactly the headers the guard parses (the parsers in parse.h,
// TCP's header included) and does one hash-map lookup keyed by the flow's
// addresses and ports: the least any per-flow filter does. It judges
// nothing; it drops only what the guard would drop as malformed and
// packets of flows the map holds with a non-zero value, so that neither
// the parse nor the lookup can be optimised away.

#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define REFERENCE_FLOWS_MAX 1024

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, __u64);
	__uint(max_entries, REFERENCE_FLOWS_MAX);
} reference_flows SEC(".maps");

// reference returns 1 to drop the packet, 0 to pass it.
static __always_inline int reference(void *data, void *data_end, __u32 frame_len)
{
	struct cursor c = {.pos = data, .end = data_end};
	struct packet p = {};

	switch (parse_packet(&c, &p, frame_len)) {
	case PARSED_PORTS:
		break;
	case PARSED_MALFORMED:
		return 1;
	case PARSED_NOT_IP:
	case PARSED_NO_PORTS:
	case PARSED_FRAGMENT:
		return 0;
	}
	if (p.l4proto == IPPROTO_TCP) {
		__u32 payload_off, payload_len;
		if (!parse_tcp(&c, &p, &payload_off, &payload_len))
			return 1;
	}
	__u64 *v = bpf_map_lookup_elem(&reference_flows, &p.key);
	return v && *v;
}

SEC("xdp")
int reference_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	return reference(data, data_end, data_end - data) ? XDP_DROP : XDP_PASS;
}

// As guard_tc: the first HDR_PULL_LEN bytes are made linear first.
#define HDR_PULL_LEN 256

SEC("tc")
int reference_tc(struct __sk_buff *skb)
{
	__u32 linear = skb->data_end - skb->data;
	if (linear < HDR_PULL_LEN && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < HDR_PULL_LEN ? skb->len : HDR_PULL_LEN);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	return reference(data, data_end, skb->len) ? TCX_DROP : TCX_NEXT;
}
