// Package chat holds the domain vocabulary shared by every service: the error
// model with its codes, room and message kinds, and the limits users meet.
package chat

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Code classifies an error for clients. The same codes are used in REST error
// bodies and in WebSocket `error` events (see docs/protocol.md).
type Code string

// Error codes (docs/architecture.md, "One error model").
const (
	CodeBadRequest   Code = "BAD_REQUEST"
	CodeUnknownEvent Code = "UNKNOWN_EVENT"
	CodeTooLarge     Code = "TOO_LARGE"
	// CodeUnsupportedMediaType refuses a request body with a Content-Encoding
	// (compressed bodies are refused, never inflated) and an upload whose
	// content is not of an allowed type.
	CodeUnsupportedMediaType Code = "UNSUPPORTED_MEDIA_TYPE"
	CodeUnauthorized         Code = "UNAUTHORIZED"
	CodeForbidden            Code = "FORBIDDEN"
	CodeNotFound             Code = "NOT_FOUND"
	CodeConflict             Code = "CONFLICT"
	CodeRateLimited          Code = "RATE_LIMITED"
	CodeServerFull           Code = "SERVER_FULL"
	CodeUnavailable          Code = "UNAVAILABLE"
	CodeInternal             Code = "INTERNAL"
)

// Error is an error meant to be shown to a client: its Message is safe to
// expose. Anything that is not an *Error is reported as INTERNAL with a
// generic message, and its detail goes only to the log.
type Error struct {
	// Code is the client-visible class of the error.
	Code Code
	// Message is a human-readable explanation safe to show to the client.
	Message string
	// Err is an optional cause kept for logs; never shown to clients.
	Err error
	// RetryAfter, when positive, is how long the client should wait before
	// trying again (RATE_LIMITED); zero means no hint.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with the given code and message that keeps err as
// its cause for logs.
func Wrap(code Code, err error, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// RateLimited returns a RATE_LIMITED *Error telling the client to retry
// after retry.
func RateLimited(retry time.Duration, format string, args ...any) *Error {
	return &Error{Code: CodeRateLimited, Message: fmt.Sprintf(format, args...), RetryAfter: retry}
}

// RetryAfter returns the retry hint of the first *Error in err's chain, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// ErrorCode returns the code of the first *Error in err's chain, or INTERNAL.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the client-safe message of err: the Message of its
// *Error, or a generic text for anything else.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// HTTPStatus maps a code to its HTTP status; it is the only such mapping.
func HTTPStatus(code Code) int {
	switch code {
	case CodeBadRequest, CodeUnknownEvent:
		return http.StatusBadRequest
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeUnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeConflict:
		return http.StatusConflict
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeServerFull, CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
