package cluster

// RunningMode is the mode the lab in cfg.Dir was brought up in, "" when it
// is down.
func RunningMode(cfg Config) Mode { return readMode(cfg) }
