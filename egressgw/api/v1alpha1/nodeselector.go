package v1alpha1

// NodeSelectorMatches is the rule of an EgressGateway's spec.nodeSelector
// (matchLabels semantics): every pair is among the node's labels. An empty
// selector selects no node (the CRD refuses one; this keeps a broken
// object from making every node a gateway). The agent (is this node a
// candidate?) and the operator (which nodes are candidates?) both use it.
func NodeSelectorMatches(selector, nodeLabels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := nodeLabels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
