package selection

import "container/heap"

// Heap slots of a nodeState: the same node can sit in both heaps.
const (
	lapseHeap    = 0 // nodes with a heartbeat that may still lapse
	eligibleHeap = 1 // nodes eligible for at least one gateway
)

// nodeHeap is a min-heap of nodes by heartbeat expiry that knows each
// node's position, so that a renewal is an O(log n) Fix, not a rebuild.
type nodeHeap struct {
	s    []*nodeState
	slot int
}

func (h *nodeHeap) Len() int           { return len(h.s) }
func (h *nodeHeap) Less(i, j int) bool { return h.s[i].expiry.Before(h.s[j].expiry) }
func (h *nodeHeap) Swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].heapIdx[h.slot] = i
	h.s[j].heapIdx[h.slot] = j
}

func (h *nodeHeap) Push(x any) {
	n := x.(*nodeState)
	n.heapIdx[h.slot] = len(h.s)
	h.s = append(h.s, n)
}

func (h *nodeHeap) Pop() any {
	last := len(h.s) - 1
	n := h.s[last]
	h.s[last] = nil
	h.s = h.s[:last]
	n.heapIdx[h.slot] = -1
	return n
}

// set puts n into the heap (or fixes its position after its expiry changed)
// when in is true, and takes it out otherwise.
func (h *nodeHeap) set(n *nodeState, in bool) {
	i := n.heapIdx[h.slot]
	switch {
	case in && i < 0:
		heap.Push(h, n)
	case in:
		heap.Fix(h, i)
	case i >= 0:
		heap.Remove(h, i)
	}
}

// min is the node expiring first; the heap must not be empty.
func (h *nodeHeap) min() *nodeState { return h.s[0] }

// gwHeap is a min-heap of gateways by the end of the hold-down their
// decision waits for (gwState.holdEnd), knowing each one's position.
type gwHeap struct{ s []*gwState }

func (h *gwHeap) Len() int           { return len(h.s) }
func (h *gwHeap) Less(i, j int) bool { return h.s[i].holdEnd.Before(h.s[j].holdEnd) }
func (h *gwHeap) Swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].holdIdx = i
	h.s[j].holdIdx = j
}

func (h *gwHeap) Push(x any) {
	g := x.(*gwState)
	g.holdIdx = len(h.s)
	h.s = append(h.s, g)
}

func (h *gwHeap) Pop() any {
	last := len(h.s) - 1
	g := h.s[last]
	h.s[last] = nil
	h.s = h.s[:last]
	g.holdIdx = -1
	return g
}

// set puts g into the heap (or fixes its position after holdEnd changed)
// when in is true, and takes it out otherwise.
func (h *gwHeap) set(g *gwState, in bool) {
	i := g.holdIdx
	switch {
	case in && i < 0:
		heap.Push(h, g)
	case in:
		heap.Fix(h, i)
	case i >= 0:
		heap.Remove(h, i)
	}
}

// min is the gateway whose hold ends first; the heap must not be empty.
func (h *gwHeap) min() *gwState { return h.s[0] }
