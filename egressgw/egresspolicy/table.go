package egresspolicy

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints entries the way `cilium-dbg bpf egress list` prints the
// map: the same columns, tabwriter settings and special gateway values
// ("Not Found", "Excluded CIDR"), or "No entries found." when empty.
func WriteTable(w io.Writer, entries []Entry) error {
	if len(entries) == 0 {
		_, err := fmt.Fprintln(w, "No entries found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 5, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "Source IP\tDestination CIDR\tEgress IP\tGateway IP")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Source, e.Dest, e.EgressIP, gatewayString(e.GatewayIP))
	}
	return tw.Flush()
}

// FormatTable is WriteTable into a string.
func FormatTable(entries []Entry) string {
	var b strings.Builder
	_ = WriteTable(&b, entries)
	return b.String()
}
