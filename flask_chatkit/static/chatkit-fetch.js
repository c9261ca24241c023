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
 *
 * It also keeps an answer that runs on after a reload (or in another tab) in
 * view: when the thread the component loads (threads.get_by_id) is locked
 * because an answer is still running, it calls the component's fetchUpdates()
 * about once a second (FlaskChatKit.updateInterval, in ms) until that answer
 * ends, which it learns from the server's re-attach stream
 * (GET <api url>/threads/<id>/events). The component is the page's
 * <openai-chatkit> element, or the one given to FlaskChatKit.follow(element).
 */
(function () {
  "use strict";

  var leaving = false;
  window.addEventListener("pagehide", function () { leaving = true; });
  window.addEventListener("beforeunload", function () { leaving = true; });
  window.addEventListener("pageshow", function () { leaving = false; });

  var CREATED = /"type":"thread\.created","thread":\{"id":"([^"]+)"/;


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

  function apiUrl(url, tail) {
    var target = new URL(url, document.baseURI);
    target.pathname = target.pathname.replace(/\/$/, "") + tail;
    return target.href;
  }

  // --- following an answer that runs on -------------------------------------

  var following = null; // {threadId, controller, timer}
  var component = null;

  function updateNow() {
    var element = component || document.querySelector("openai-chatkit");
    if (!element || typeof element.fetchUpdates !== "function") return;
    try {
      Promise.resolve(element.fetchUpdates()).catch(function () { /* next tick */ });
    } catch (error) { /* next tick */ }
  }

  function unfollow() {
    if (!following) return;
    clearInterval(following.timer);
    following.controller.abort();
    following = null;
  }

  // The shown thread is locked: refresh the component every interval while the
  // server's re-attach stream says the answer runs; once more when it ends.
  function follow(base, url, threadId, headers) {
    if (following && following.threadId === threadId) return;
    unfollow();
    var mine = {threadId: threadId, controller: new AbortController(), timer: null};
    following = mine;
    mine.timer = setInterval(updateNow, window.FlaskChatKit.updateInterval || 1000);
    var ended = function () {
      if (following !== mine) return; // another thread is shown now
      unfollow();
      updateNow();
    };
    base(apiUrl(url, "/threads/" + encodeURIComponent(threadId) + "/events"), {
      headers: headers, signal: mine.controller.signal,
    }).then(function (response) {
      if (response.status !== 200 || !response.body) return ended();
      var reader = response.body.getReader();
      var pump = function () {
        return reader.read().then(function (step) { return step.done ? ended() : pump(); });
      };
      return pump();
    }).catch(function () {
      if (following === mine && !mine.controller.signal.aborted) ended();
    });
  }

  // What a JSON answer says about the shown thread (threads.get_by_id only).
  function noteShown(base, url, request, response, headers) {
    if (!request || request.type !== "threads.get_by_id") return;
    response.clone().json().then(function (thread) {
      var locked = thread && thread.status && thread.status.type === "locked";
      if (locked) follow(base, url, thread.id, headers);
      else if (following && following.threadId === thread.id) unfollow();
    }).catch(function () { /* not JSON: nothing to learn */ });
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
          base(apiUrl(url, "/cancel"), {
            method: "POST", headers: headers,
            body: JSON.stringify({thread_id: threadId}),
          }).catch(function () { /* the abort stands on its own */ });
        }, {once: true});
      }

      return base(input, init).then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (response.ok && type.indexOf("application/json") === 0) {
          var auth = authorization(init.headers);
          noteShown(base, url, request, response, auth ? {Authorization: auth} : {});
        }
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

  window.FlaskChatKit = Object.assign({updateInterval: 1000}, window.FlaskChatKit || {}, {
    fetch: withStop(sameOrigin),
    withStop: withStop,
    /** Use *element* as the component to refresh (default: the page's <openai-chatkit>). */
    follow: function (element) { component = element; },
  });
})();
