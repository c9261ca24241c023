/*
 * flask_chatkit: an api.fetch for OpenAI's ChatKit component that stops answers
 * on the server too. No dependencies, no build step:
 *
 *   <script src="/chatkit/static/chatkit-fetch.js"></script>
 *   chatkit.setOptions({api: {url: "/chatkit", domainKey: "...", fetch: FlaskChatKit.fetch}});
 *
 * FlaskChatKit.fetch sends the session cookie with every request. When the
 * component aborts a stream while the page stays open (its Stop button), it
 * asks the server to stop the answer as well (POST <api url>/cancel with the
 * thread's id, read from the request or from the stream's thread.created
 * event): with CHATKIT_DISCONNECT = "finish" a closed connection alone only
 * detaches. When the page is going away (pagehide, beforeunload) an abort is a
 * reload or a closed tab, not a Stop, and the answer runs on.
 *
 * FlaskChatKit.withStop(fetch) does the same around a fetch of your own (one
 * that adds headers or metadata, say).
 */
(function () {
  "use strict";

  var leaving = false;
  window.addEventListener("pagehide", function () { leaving = true; });
  window.addEventListener("beforeunload", function () { leaving = true; });
  window.addEventListener("pageshow", function () { leaving = false; });

  var CREATED = /"type":"thread\.created","thread":\{"id":"([^"]+)"/;

  function cancelUrl(url) {
    var target = new URL(url, document.baseURI);
    target.pathname = target.pathname.replace(/\/$/, "") + "/cancel";
    return target.href;
  }

  function parsed(body) {
    if (typeof body !== "string") return null;
    try {
      var data = JSON.parse(body);
      return data && typeof data === "object" && !Array.isArray(data) ? data : null;
    } catch (error) {
      return null;
    }
  }

  function authorization(headers) {
    if (!headers) return null;
    if (typeof headers.get === "function") return headers.get("Authorization");
    for (var name in headers) {
      if (name.toLowerCase() === "authorization") return headers[name];
    }
    return null;
  }

  function withStop(base) {
    return function (input, init) {
      init = init || {};
      var url = typeof input === "string" ? input : input.url;
      var request = parsed(init.body);
      var signal = init.signal;
      var threadId = request && request.params && typeof request.params.thread_id === "string"
        ? request.params.thread_id : null;
      var ended = false; // the stream came to its own end: nothing left to stop

      if (signal && request) {
        signal.addEventListener("abort", function () {
          if (leaving || ended || !threadId) return;
          var headers = {"Content-Type": "application/json"};
          var auth = authorization(init.headers);
          if (auth) headers.Authorization = auth;
          base(cancelUrl(url), {
            method: "POST", headers: headers,
            body: JSON.stringify({thread_id: threadId}),
          }).catch(function () { /* the abort stands on its own */ });
        }, {once: true});
      }

      return base(input, init).then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!signal || !request || !response.body || type.indexOf("text/event-stream") !== 0) {
          ended = true;
          return response;
        }
        var decoder = new TextDecoder();
        var seen = "";
        var watch = new TransformStream({
          transform: function (chunk, controller) {
            if (!threadId) {
              seen += decoder.decode(chunk, {stream: true});
              var found = CREATED.exec(seen);
              if (found) {
                threadId = found[1];
                seen = "";
              } else if (seen.length > 65536) {
                seen = seen.slice(-4096);
              }
            }
            controller.enqueue(chunk);
          },
          flush: function () { ended = true; },
        });
        return new Response(response.body.pipeThrough(watch), {
          status: response.status, statusText: response.statusText, headers: response.headers,
        });
      });
    };
  }

  function sameOrigin(input, init) {
    return window.fetch(input, Object.assign({credentials: "same-origin"}, init || {}));
  }

  window.FlaskChatKit = Object.assign(window.FlaskChatKit || {}, {
    fetch: withStop(sameOrigin),
    withStop: withStop,
  });
})();
