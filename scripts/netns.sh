#!/usr/bin/env bash
# Three "hosts" on one machine: network namespaces PREFIX-head, PREFIX-a and PREFIX-b, each with
# its own address on SUBNET.0/24 (.1, .2, .3), joined by veth pairs to a bridge in a fourth
# namespace, PREFIX-sw. Nothing touches the machine's own interfaces or addresses. Needs root
# (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2.
#
#   sudo scripts/netns.sh up demo 10.213.7      # create
#   sudo ip netns exec demo-head target/debug/troupe head --host 10.213.7.1 --port 6380 \
#        --data-dir /tmp/demo-head &
#   sudo ip netns exec demo-a target/debug/troupe node --head 10.213.7.1:6380 --host 10.213.7.2 \
#        --token-file /tmp/demo-head/token --label host=a &
#   sudo ip netns exec demo-b target/debug/troupe node --head 10.213.7.1:6380 --host 10.213.7.3 \
#        --token-file /tmp/demo-head/token --label host=b &
#   sudo ip netns exec demo-head env TROUPE_TOKEN_FILE=/tmp/demo-head/token \
#        target/debug/troupe status --head 10.213.7.1:6380
#   sudo scripts/netns.sh down demo             # remove (kill the processes first)
#
# cli/tests/netns.rs does all of this and runs actors and a job across the three.
set -euo pipefail
action="${1:?usage: netns.sh up PREFIX SUBNET | down PREFIX}"
prefix="${2:?a name prefix, such as demo}"
case "$action" in
  up)
    subnet="${3:?a /24 prefix such as 10.213.7}"
    for host in head a b sw; do
      if [ -e "/run/netns/$prefix-$host" ]; then
        echo "namespace $prefix-$host exists already; choose another prefix" >&2
        exit 1
      fi
    done
    # Part-way failures remove what this call made.
    trap 'for h in head a b sw; do ip netns del "$prefix-$h" 2>/dev/null || true; done' ERR
    ip netns add "$prefix-sw"
    ip -n "$prefix-sw" link add br0 type bridge
    ip -n "$prefix-sw" link set br0 up
    ip -n "$prefix-sw" link set lo up
    i=1
    for host in head a b; do
      ns="$prefix-$host"
      ip netns add "$ns"
      # Made inside the namespaces, so the machine's own namespace never sees them.
      ip -n "$ns" link add eth0 type veth peer name "to-$host" netns "$prefix-sw"
      ip -n "$ns" addr add "$subnet.$i/24" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$ns" link set lo up
      ip -n "$prefix-sw" link set "to-$host" master br0
      ip -n "$prefix-sw" link set "to-$host" up
      i=$((i + 1))
    done
    ;;
  down)
    for host in head a b sw; do
      ip netns del "$prefix-$host" 2>/dev/null || true
    done
    ;;
  *)
    echo "unknown action $action: up or down" >&2
    exit 2
    ;;
esac
