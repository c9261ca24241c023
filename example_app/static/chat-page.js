/* The example app's chat page: the official ChatKit web component if its script
 * loads in time, else flask_chatkit's reference client (with a note saying so).
 *
 * Settings come from <script type="application/json" id="chat-config">. Every
 * request goes out with the session cookie and the page's URL and title in its
 * JSON "metadata" (the server passes them on to the model as information).
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("chat-config").textContent);
  var root = document.getElementById("chat");
  var note = document.getElementById("chat-note");

  function pageMetadata() {
    return {page: {url: window.location.href, title: document.title}};
  }

  /* A JSON request body with metadata.page set; anything else (an upload's
   * FormData, a Blob, text that is not a JSON object) is returned unchanged. */
  function withPageMetadata(body) {
    if (typeof body !== "string") return body;
    var data;
    try {
      data = JSON.parse(body);
    } catch (error) {
      return body;
    }
    if (!data || typeof data !== "object" || Array.isArray(data)) return body;
    var metadata = data.metadata;
    if (!metadata || typeof metadata !== "object" || Array.isArray(metadata)) metadata = {};
    metadata.page = pageMetadata().page;
    data.metadata = metadata;
    return JSON.stringify(data);
  }

  /* The component's api.fetch: the session cookie and the page metadata on every request. */
  function chatFetch(url, init) {
    var options = Object.assign({}, init || {}, {credentials: "include"});
    if (options.body !== undefined && options.body !== null) {
      options.body = withPageMetadata(options.body);
    }
    return window.fetch(url, options);
  }

  /* The client tools the page runs when the backend asks (the demo's /tool):
   * get_page_context answers the fields asked for ("title", "url"; both when
   * none are named) from the same URL and title as the request metadata. */
  var clientTools = {
    get_page_context: function (params) {
      var page = pageMetadata().page;
      var fields = params && Array.isArray(params.fields) ? params.fields : ["title", "url"];
      var context = {};
      fields.forEach(function (field) {
        if (Object.prototype.hasOwnProperty.call(page, field)) context[field] = page[field];
      });
      return context;
    },
  };

  /* The component's onClientTool: runs one of clientTools; an unknown tool is
   * answered with an error object (as the reference client does), so the turn
   * still gets an output to continue from. */
  function onClientTool(call) {
    var name = call && call.name;
    if (!Object.prototype.hasOwnProperty.call(clientTools, name)) {
      return Promise.resolve({error: "Unknown client tool: " + name});
    }
    return new Promise(function (resolve) { resolve(clientTools[name](call.params || {})); });
  }

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = src;
      script.async = true;
      script.onload = resolve;
      script.onerror = function () { reject(new Error("Could not load " + src)); };
      document.head.appendChild(script);
    });
  }

  function delay(seconds) {
    return new Promise(function (_, reject) {
      window.setTimeout(function () {
        reject(new Error("The ChatKit component did not load within " + seconds + " s."));
      }, seconds * 1000);
    });
  }

  function showNote(text, kind) {
    note.dataset.ck = kind;
    note.textContent = text;
  }

  function ready(client) {
    root.dataset.client = client;
    root.removeAttribute("aria-busy");
  }

  function mountOfficial() {
    // a script that fails to load ends the wait at once; a script that loads
    // but never defines the element ends it at the timeout
    var loaded = loadScript(config.scriptUrl);
    return Promise.race([
      customElements.whenDefined("openai-chatkit"),
      loaded.then(function () { return new Promise(function () {}); }),
      delay(config.scriptTimeout),
    ]).then(function () {
      var element = document.createElement("openai-chatkit");
      root.replaceChildren(element);
      element.setOptions({
        api: {
          url: config.apiUrl,
          domainKey: config.domainKey,
          uploadStrategy: config.uploadStrategy,
          // its Stop stops the answer on the server too (flask_chatkit's chatkit-fetch.js)
          fetch: window.FlaskChatKit && window.FlaskChatKit.withStop
            ? window.FlaskChatKit.withStop(chatFetch) : chatFetch,
        },
        locale: config.locale,
        theme: {
          colorScheme: window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light",
          radius: "round",
        },
        header: {title: {text: config.title}},
        history: {enabled: true},
        composer: {placeholder: config.placeholder, attachments: {enabled: true}},
        startScreen: {greeting: config.greeting},
        threadItemActions: {feedback: true, retry: true},
        onClientTool: onClientTool,
      });
      ready("official");
    });
  }

  function mountReference() {
    var client = window.FlaskChatKit && window.FlaskChatKit.mount
      ? Promise.resolve() : loadScript(config.clientUrl);
    return client.then(function () {
      root.replaceChildren();
      var chat = window.FlaskChatKit.mount(root, {
        apiUrl: config.apiUrl,
        uploadStrategy: config.uploadStrategy,
        metadata: pageMetadata,
        locale: config.locale,
        title: config.title,
        placeholder: config.placeholder,
        clientTools: clientTools,
      });
      ready("reference");
      return chat;
    });
  }

  function fallBack(reason) {
    showNote(
      "The official ChatKit component could not be loaded (" + reason.message + "), so this " +
      "page uses flask_chatkit's reference client instead.",
      "fallback-note"
    );
    return mountReference();
  }

  var started = config.scriptUrl ? mountOfficial().catch(fallBack) : mountReference();
  started.catch(function (error) {
    showNote(
      "The chat could not be started (" + error.message + "). Reload the page to try again.",
      "chat-error"
    );
    root.removeAttribute("aria-busy");
  });

  // for scripts and tests on this page
  window.chatPage = {config: config, fetch: chatFetch, metadata: pageMetadata};
})();
