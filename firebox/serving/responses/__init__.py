"""The Responses API: request -> chat request, stored conversations, the response object and its stream events."""
