package api

// Send and receive stream a snapshot between daemons (volctl send | volctl receive). Their
// bodies are sendstreams (package backend/sendstream), not JSON, and no body size limit
// applies: a stream is bounded by the receiving store's quota and disk guard instead.
const (
	// RouteSend answers with the stream of snapshot {snapshot} of volume {name}; ?from=SNAP
	// makes it incremental from that older snapshot. A failure before the first byte is an
	// Error as on every route; one after it ends the stream without its trailer (every
	// receiver refuses it) and sets the HTTP trailer TrailerError.
	RouteSend = "GET " + Prefix + "/volumes/{name}/snapshots/{snapshot}/send" // -> stream; trailers TrailerError, TrailerSendStats
	// RouteReceive reads a stream as its body and builds volume {name} from it (a full
	// stream), or the stream's snapshot on top of {name} (an incremental one: {name} must hold
	// the stream's base and not be mounted; its live state becomes the new snapshot). An
	// incremental stream onto a volume that changed since its base is refused (CodeInvalid)
	// unless ?force=true, which drops the live changes.
	RouteReceive = "POST " + Prefix + "/volumes/{name}/receive" // ?force=true; stream -> ReceiveResult
)

// HTTP trailers of RouteSend.
const (
	TrailerError     = "Fusevol-Error"      // why the stream stopped short
	TrailerSendStats = "Fusevol-Send-Stats" // SendStats as JSON, when the stream is complete
)

// SendStats is what a send wrote.
type SendStats struct {
	Inodes    int64 `json:"inodes"`
	Chunks    int64 `json:"chunks"`
	Bodies    int64 `json:"bodies"`     // chunk bodies, each once per stream
	BodyBytes int64 `json:"body_bytes"` // their plain bytes
	Bytes     int64 `json:"bytes"`      // stream bytes
}

// ReceiveResult is what a receive built.
type ReceiveResult struct {
	Volume      string `json:"volume"`
	Snapshot    string `json:"snapshot"`
	Incremental bool   `json:"incremental"`
	Inodes      int64  `json:"inodes"`
	Chunks      int64  `json:"chunks"`
	Bodies      int64  `json:"bodies"`     // chunk bodies written
	BodyBytes   int64  `json:"body_bytes"` // their plain bytes
	Skipped     int64  `json:"skipped"`    // chunk bodies the store already held (not written again)
	Bytes       int64  `json:"bytes"`      // stream bytes
}
