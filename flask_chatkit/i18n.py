"""The user-facing texts of the responder and the server, in English, German and French.

Texts are chosen from the request's ``Accept-Language`` (``context.locale``),
falling back from ``de-AT`` to ``de`` and then to English. An app adds a
language or rewords a text by passing ``messages={"es": {...}}`` to
:class:`~flask_chatkit.assistant.Assistant`; keys it leaves out keep the
shipped wording.
"""

from __future__ import annotations

import typing as t

DEFAULT_LOCALE = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "thread.running": "Still answering…",
        "turn.interrupted": "Answer interrupted",
        "turn.too_many": (
            "You already have {count} answers running. Wait for one of them to finish "
            "(or stop it), then send your message again."
        ),
        "turn.interrupted.detail": (
            "The server stopped before this answer was finished. Retry to get a complete answer."
        ),
        "tool.running": "Using {tool}…",
        "form.pending": (
            "Please answer or cancel the form above first; your message was kept "
            "but not sent to the assistant."
        ),
        "form.already_answered": "This form was already answered.",
        "form.sent": "Answer sent.",
        "form.best_judgement": "You left it to the assistant's judgement.",
        "form.cancelled": "You declined to answer.",
        "model.not_allowed": (
            "The model “{model}” is not available here; the default model answers instead."
        ),
        "action.unknown": "This action is not supported here.",
        "error.timeout": "The model took too long to answer. Please try again.",
        "error.rate_limit": "The model is busy right now. Please try again in a moment.",
        "error.upstream": "The model service had a problem. Please try again.",
        "error.connection": "The model service could not be reached. Please try again.",
        "error.malformed": (
            "The model service sent an answer that could not be read. Please try again."
        ),
        "error.content_filter": "The answer was blocked by the content filter.",
        "error.bad_request": "The model service refused this request.",
        "error.config": (
            "The assistant is not set up correctly. Please tell the site's administrators."
        ),
        "quota.rate": (
            "You are sending messages faster than this site allows. You can write again in {wait}."
        ),
        "quota.tokens": (
            "You have used up your allowance of model tokens for now. You can write again in {wait}."
        ),
        "quota.notice": (
            "You have used {percent} % of your allowance of model tokens; it renews in {wait}."
        ),
        "time.second": "1 second",
        "time.seconds": "{n} seconds",
        "time.minute": "1 minute",
        "time.minutes": "{n} minutes",
        "time.hour": "1 hour",
        "time.hours": "{n} hours",
        "time.day": "1 day",
        "time.days": "{n} days",
    },
    "de": {
        "thread.running": "Antwortet noch…",
        "turn.interrupted": "Antwort unterbrochen",
        "turn.too_many": (
            "Es laufen schon {count} Antworten für dich. Warte, bis eine fertig ist "
            "(oder stoppe sie), und sende deine Nachricht dann noch einmal."
        ),
        "turn.interrupted.detail": (
            "Der Server wurde beendet, bevor diese Antwort fertig war. Wiederhole die "
            "Anfrage für eine vollständige Antwort."
        ),
        "tool.running": "Verwende {tool}…",
        "form.pending": (
            "Bitte beantworte oder schließe zuerst das Formular oben; deine Nachricht "
            "wurde gespeichert, aber nicht an den Assistenten geschickt."
        ),
        "form.already_answered": "Dieses Formular wurde bereits beantwortet.",
        "form.sent": "Antwort gesendet.",
        "form.best_judgement": "Du hast es dem Ermessen des Assistenten überlassen.",
        "form.cancelled": "Du hast die Antwort abgelehnt.",
        "model.not_allowed": (
            "Das Modell „{model}“ ist hier nicht verfügbar; es antwortet das Standardmodell."
        ),
        "action.unknown": "Diese Aktion wird hier nicht unterstützt.",
        "error.timeout": (
            "Das Modell hat zu lange für die Antwort gebraucht. Bitte versuche es erneut."
        ),
        "error.rate_limit": (
            "Das Modell ist gerade ausgelastet. Bitte versuche es gleich noch einmal."
        ),
        "error.upstream": "Beim Modelldienst ist ein Fehler aufgetreten. Bitte versuche es erneut.",
        "error.connection": ("Der Modelldienst ist nicht erreichbar. Bitte versuche es erneut."),
        "error.malformed": (
            "Die Antwort des Modelldienstes war nicht lesbar. Bitte versuche es erneut."
        ),
        "error.content_filter": "Die Antwort wurde vom Inhaltsfilter blockiert.",
        "error.bad_request": "Der Modelldienst hat diese Anfrage abgelehnt.",
        "error.config": (
            "Der Assistent ist nicht richtig eingerichtet. Bitte gib den Betreibern "
            "der Seite Bescheid."
        ),
        "quota.rate": (
            "Du sendest Nachrichten schneller, als diese Seite es erlaubt. Du kannst in {wait} "
            "wieder schreiben."
        ),
        "quota.tokens": (
            "Dein Kontingent an Modell-Tokens ist vorerst aufgebraucht. Du kannst in {wait} "
            "wieder schreiben."
        ),
        "quota.notice": (
            "Du hast {percent} % deines Kontingents an Modell-Tokens verbraucht; es erneuert "
            "sich in {wait}."
        ),
        "time.second": "1 Sekunde",
        "time.seconds": "{n} Sekunden",
        "time.minute": "1 Minute",
        "time.minutes": "{n} Minuten",
        "time.hour": "1 Stunde",
        "time.hours": "{n} Stunden",
        "time.day": "1 Tag",
        "time.days": "{n} Tagen",
    },
    "fr": {
        "thread.running": "Réponse en cours…",
        "turn.interrupted": "Réponse interrompue",
        "turn.too_many": (
            "Vous avez déjà {count} réponses en cours. Attendez que l’une d’elles se termine "
            "(ou arrêtez-la), puis renvoyez votre message."
        ),
        "turn.interrupted.detail": (
            "Le serveur s’est arrêté avant la fin de cette réponse. Veuillez réessayer pour "
            "obtenir une réponse complète."
        ),
        "tool.running": "Utilisation de {tool}…",
        "form.pending": (
            "Veuillez d’abord répondre au formulaire ci-dessus ou l’annuler ; votre "
            "message a été conservé mais pas envoyé à l’assistant."
        ),
        "form.already_answered": "Ce formulaire a déjà reçu une réponse.",
        "form.sent": "Réponse envoyée.",
        "form.best_judgement": "Vous vous en êtes remis au jugement de l’assistant.",
        "form.cancelled": "Vous avez refusé de répondre.",
        "model.not_allowed": (
            "Le modèle « {model} » n’est pas disponible ici ; le modèle par défaut répond."
        ),
        "action.unknown": "Cette action n’est pas prise en charge ici.",
        "error.timeout": "Le modèle a mis trop de temps à répondre. Veuillez réessayer.",
        "error.rate_limit": "Le modèle est très sollicité. Veuillez réessayer dans un instant.",
        "error.upstream": "Le service du modèle a rencontré un problème. Veuillez réessayer.",
        "error.connection": "Le service du modèle est injoignable. Veuillez réessayer.",
        "error.malformed": ("La réponse du service du modèle était illisible. Veuillez réessayer."),
        "error.content_filter": "La réponse a été bloquée par le filtre de contenu.",
        "error.bad_request": "Le service du modèle a refusé cette requête.",
        "error.config": (
            "L’assistant n’est pas configuré correctement. Veuillez prévenir les "
            "responsables du site."
        ),
        "quota.rate": (
            "Vous envoyez des messages plus vite que ce site ne le permet. Vous pourrez écrire "
            "à nouveau dans {wait}."
        ),
        "quota.tokens": (
            "Vous avez épuisé votre quota de jetons du modèle pour le moment. Vous pourrez "
            "écrire à nouveau dans {wait}."
        ),
        "quota.notice": (
            "Vous avez utilisé {percent} % de votre quota de jetons du modèle ; il se renouvelle "
            "dans {wait}."
        ),
        "time.second": "1 seconde",
        "time.seconds": "{n} secondes",
        "time.minute": "1 minute",
        "time.minutes": "{n} minutes",
        "time.hour": "1 heure",
        "time.hours": "{n} heures",
        "time.day": "1 jour",
        "time.days": "{n} jours",
    },
}


class Catalog:
    """Texts by locale: the shipped :data:`MESSAGES` merged with an app's own."""

    def __init__(self, extra: t.Mapping[str, t.Mapping[str, str]] | None = None) -> None:
        self.messages: dict[str, dict[str, str]] = {k: dict(v) for k, v in MESSAGES.items()}
        for locale, texts in (extra or {}).items():
            self.messages.setdefault(_normal(locale), {}).update(texts)

    def pick(self, locale: str | None) -> str:
        """The best locale we have for *locale* (``"de-AT"`` → ``"de"``)."""
        if locale:
            wanted = _normal(locale)
            if wanted in self.messages:
                return wanted
            base = wanted.split("-")[0]
            if base in self.messages:
                return base
        return DEFAULT_LOCALE

    def text(self, key: str, locale: str | None = None, **values: t.Any) -> str:
        """The text *key* in *locale* (English if missing), formatted with *values*."""
        chosen = self.messages.get(self.pick(locale), {})
        template = chosen.get(key) or self.messages[DEFAULT_LOCALE].get(key) or key
        return template.format(**values) if values else template


def _normal(locale: str) -> str:
    return locale.strip().replace("_", "-").lower()


__all__ = ["Catalog", "DEFAULT_LOCALE", "MESSAGES"]
