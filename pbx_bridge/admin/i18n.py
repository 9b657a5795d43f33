"""Messages of the admin API and the dashboard in Russian and English.

A message is looked up by its machine-readable code; `{name}` placeholders take the details of
the error. Russian is the default because the product's users are Russian first.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"

MESSAGES: dict[str, dict[str, str]] = {
    # Error codes of the response as a whole.
    "unauthenticated": {
        "en": "Authentication required: send an API token as 'Authorization: Bearer <token>' or log in.",
        "ru": "Нужна аутентификация: передайте API-токен в заголовке 'Authorization: Bearer <токен>' или войдите в систему.",
    },
    "invalid_credentials": {
        "en": "Invalid login or password.",
        "ru": "Неверный логин или пароль.",
    },
    "forbidden": {
        "en": "Your role does not allow this action.",
        "ru": "Ваша роль не позволяет выполнить это действие.",
    },
    "not_found": {
        "en": "Not found: {what}.",
        "ru": "Не найдено: {what}.",
    },
    "method_not_allowed": {
        "en": "Method {method} is not allowed here.",
        "ru": "Метод {method} здесь не поддерживается.",
    },
    "validation_failed": {
        "en": "The request has invalid fields; see 'fields'.",
        "ru": "В запросе есть ошибки в полях; подробности в 'fields'.",
    },
    "invalid_json": {
        "en": "The request body is not a JSON object.",
        "ru": "Тело запроса не является JSON-объектом.",
    },
    "conflict": {
        "en": "The change conflicts with stored data: a unique value is taken, or other objects refer to this one.",
        "ru": "Изменение противоречит сохранённым данным: уникальное значение уже занято или на этот объект ссылаются другие.",
    },
    "recording_unavailable": {
        "en": "The recording of this call is not available.",
        "ru": "Запись этого звонка недоступна.",
    },
    "range_not_satisfiable": {
        "en": "The requested byte range is outside the file.",
        "ru": "Запрошенный диапазон байтов выходит за пределы файла.",
    },
    "too_many_login_attempts": {
        "en": "Too many failed logins. Try again in {seconds} seconds.",
        "ru": "Слишком много неудачных попыток входа. Повторите через {seconds} с.",
    },
    "payload_too_large": {
        "en": "The request body is too large.",
        "ru": "Тело запроса слишком велико.",
    },
    "internal_error": {
        "en": "Internal error; the server log has the details.",
        "ru": "Внутренняя ошибка; подробности в журнале сервера.",
    },
    # Field error codes.
    "required": {"en": "This field is required.", "ru": "Обязательное поле."},
    "unknown_field": {"en": "Unknown field.", "ru": "Неизвестное поле."},
    "invalid_type": {"en": "Must be {expected}.", "ru": "Ожидается {expected}."},
    "invalid_choice": {
        "en": "Must be one of: {choices}.",
        "ru": "Допустимые значения: {choices}.",
    },
    "too_long": {
        "en": "At most {max} characters.",
        "ru": "Не более {max} символов.",
    },
    "too_short": {
        "en": "At least {min} characters.",
        "ru": "Не менее {min} символов.",
    },
    "out_of_range": {
        "en": "Must be between {min} and {max}.",
        "ru": "Допустимо от {min} до {max}.",
    },
    "invalid_phone": {
        "en": "Not a valid phone number.",
        "ru": "Некорректный номер телефона.",
    },
    "phone_extension": {
        "en": "A tracking number cannot have an extension, because callers dial it directly. Give the number alone.",
        "ru": "У номера отслеживания не может быть добавочного, потому что на него звонят напрямую. Укажите только номер.",
    },
    "invalid_characters": {
        "en": "Contains a character that cannot be stored: NUL (\\u0000) or an unpaired surrogate.",
        "ru": "Содержит символ, который нельзя сохранить: NUL (\\u0000) или непарный суррогат.",
    },
    "invalid_dial_string": {
        "en": "Must be an Asterisk dial string TECHNOLOGY/RESOURCE of at most {max} characters without spaces, such as PJSIP/office.",
        "ru": "Ожидается строка набора Asterisk вида ТЕХНОЛОГИЯ/РЕСУРС без пробелов, не длиннее {max} символов, например PJSIP/office.",
    },
    "invalid_date": {
        "en": "Must be a date as YYYY-MM-DD.",
        "ru": "Ожидается дата в формате ГГГГ-ММ-ДД.",
    },
    "invalid_datetime": {
        "en": "Must be a date and time in ISO 8601 with a time zone, or a date as YYYY-MM-DD.",
        "ru": "Ожидается дата и время в ISO 8601 с часовым поясом или дата в формате ГГГГ-ММ-ДД.",
    },
    "invalid_timezone": {
        "en": "Not a known IANA time zone, such as Europe/Moscow.",
        "ru": "Неизвестный часовой пояс IANA; пример: Europe/Moscow.",
    },
    "invalid_origin": {
        "en": "Must be an origin such as https://example.ru.",
        "ru": "Ожидается origin вида https://example.ru.",
    },
    "period_reversed": {
        "en": "The end must not be before the start.",
        "ru": "Конец периода не может быть раньше начала.",
    },
    "reference_not_found": {
        "en": "No {what} with this id in this company.",
        "ru": "Нет объекта «{what}» с таким id в этой компании.",
    },
    "already_exists": {
        "en": "This value is already taken.",
        "ru": "Это значение уже занято.",
    },
    "mode_binding": {
        "en": "A static number needs source_id and no pool_id; a pool number needs pool_id and no source_id.",
        "ru": "Статическому номеру нужен source_id без pool_id; номеру пула нужен pool_id без source_id.",
    },
}

_TYPE_NAMES: dict[str, dict[str, str]] = {
    "string": {"en": "a string", "ru": "строка"},
    "integer": {"en": "an integer", "ru": "целое число"},
    "boolean": {"en": "true or false", "ru": "true или false"},
    "number": {"en": "a number", "ru": "число"},
    "array": {"en": "an array", "ru": "массив"},
    "object": {"en": "an object", "ru": "объект"},
}


def message(code: str, language: str, **details: Any) -> str:
    """Format the message of `code` in `language`; unknown codes fall back to the code itself."""
    texts = MESSAGES.get(code)
    if texts is None:
        return code
    if "expected" in details and details["expected"] in _TYPE_NAMES:
        details = {**details, "expected": _TYPE_NAMES[details["expected"]][language]}
    try:
        return texts[language].format(**details)
    except (KeyError, IndexError):
        return texts[language]


def negotiate_language(accept_language: str | None, fallback: str = DEFAULT_LANGUAGE) -> str:
    """Pick "ru" or "en" from an Accept-Language header by its quality values (RFC 9110)."""
    if not accept_language:
        return fallback
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if quality > 0 and primary in LANGUAGES:
            ranked.append((-quality, position, primary))
    if not ranked:
        return fallback
    return min(ranked)[2]
