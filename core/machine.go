package core

// state is one point of the status machine the application sees.
type state struct {
	status ConnectionStatus
	reason ConnectionStatusChangeReason
}

// fatalReasons end a link: the engine stops retrying and stays Disconnected until Connect is called again.
var fatalReasons = []ConnectionStatusChangeReason{
	ReasonBadCredential, ReasonDeviceDisabled, ReasonRetryExpired, ReasonExpiredSASToken, ReasonCommunicationError,
}

// retryingReasons are why a link that is being retried went down.
var retryingReasons = []ConnectionStatusChangeReason{ReasonNoNetwork, ReasonCommunicationError, ReasonExpiredSASToken}

// allowed is the transition table: for each status, the states the client may move to. Every status change
// goes through transition, which refuses anything not listed here.
var allowed = func() map[ConnectionStatus]map[state]bool {
	t := map[ConnectionStatus]map[state]bool{}
	add := func(from ConnectionStatus, to ConnectionStatus, reasons ...ConnectionStatusChangeReason) {
		if t[from] == nil {
			t[from] = map[state]bool{}
		}
		for _, r := range reasons {
			t[from][state{to, r}] = true
		}
	}
	for _, from := range []ConnectionStatus{StatusDisconnected, StatusConnected, StatusDisconnectedRetrying} {
		add(from, StatusDisconnected, fatalReasons...)
		add(from, StatusDisabled, ReasonClientClose)
		add(from, StatusDisconnectedRetrying, retryingReasons...)
		if from != StatusConnected {
			add(from, StatusConnected, ReasonConnectionOk)
		}
	}
	return t
}()

// transitionAllowed reports whether the client may go from its current state to next. Staying in the same
// state is not a transition, so it is not allowed either.
func transitionAllowed(cur, next state) bool {
	return cur != next && allowed[cur.status][next]
}
