package plugin

import (
	"fmt"
	"testing"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
)

// TestBackendClasses: every store error reaches the control API with the code and status backend
// gives it, the code is one of plugin/api's, and that code's status agrees with statusOf.
func TestBackendClasses(t *testing.T) {
	codes := map[string]bool{}
	for _, c := range []string{api.CodeInvalid, api.CodeForbidden, api.CodeNotFound, api.CodeExists,
		api.CodeInUse, api.CodeTooLarge, api.CodeUnavailable, api.CodeInternal} {
		codes[c] = true
	}
	for _, e := range backend.Errors() {
		c, _ := backend.Classify(e)
		if !codes[c.Code] {
			t.Errorf("%v: code %q is not a control API code", e, c.Code)
		}
		if s := statusOf(c.Code); s != c.Status {
			t.Errorf("%v: backend says %d %s, statusOf(%s) = %d", e, c.Status, c.Code, c.Code, s)
		}
		ae, status := apiError(fmt.Errorf("op: %w", e))
		if ae.Code != c.Code || status != c.Status {
			t.Errorf("apiError(%v) = %s %d, want %s %d", e, ae.Code, status, c.Code, c.Status)
		}
	}
	for _, tc := range []struct {
		err    error
		code   string
		status int
	}{
		{errMalformed, api.CodeInvalid, 400},
		{errBodyTooLarge, api.CodeTooLarge, 413},
		{errShuttingDown, api.CodeUnavailable, 503},
		{fmt.Errorf("x"), api.CodeInternal, 500},
	} {
		if ae, status := apiError(tc.err); ae.Code != tc.code || status != tc.status {
			t.Errorf("apiError(%v) = %s %d, want %s %d", tc.err, ae.Code, status, tc.code, tc.status)
		}
	}
}
