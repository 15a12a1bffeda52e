package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether w is a terminal (the TCGETS test golang.org/x/term uses on Linux).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// spinner shows "label ⠋ 12s" on stderr while a long operation runs, only when stdout is a
// terminal: the control API reports no progress for gc, fsck or restore, so elapsed time is what
// the user gets. stop clears the line.
func spinner(stdout, stderr io.Writer, label string) (stop func()) {
	if !isTerminal(stdout) {
		return func() {}
	}
	frames := []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(stderr, "\r%s %c %s", label, frames[i%len(frames)], time.Since(start).Truncate(time.Second))
			select {
			case <-done:
				fmt.Fprint(stderr, "\r\033[K")
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}
