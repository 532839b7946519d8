// Package v1alpha1 holds the network.deckhouse.io/v1alpha1 API of egressha:
// EgressGateway (a group of nodes, one of them active, that SNATs selected
// pods' traffic) and EgressGatewayPolicy (which pods and destinations use a
// gateway). The field names follow the user documentation in shared/spec so
// its YAML applies unchanged; everything beyond it is additive and optional.
//
// Validation lives in the CRD (OpenAPI and CEL rules generated from the
// markers below) so a malformed object is refused by the API server with a
// message that names the field and the fix, before any controller sees it.
//
// +kubebuilder:object:generate=true
// +groupName=network.deckhouse.io
package v1alpha1
