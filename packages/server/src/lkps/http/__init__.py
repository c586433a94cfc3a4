"""HTTP/1.1 as LKPS serves it: uvicorn's protocols with limits on the request head."""
