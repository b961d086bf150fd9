## Приветствие и помощь
start-greeting = Привет, { $name }! 👋 Я ассистент, который учится на ваших оценках.
    Просто напишите сообщение. Оценивайте ответы 👍 или 👎 — или нажмите 🔄, чтобы получить другой вариант.
    /assistant — выбрать, что я делаю: чат, перефразирование, пересказ, модерация или разметка. Подробнее — /help.
help-text = <b>Как это работает</b>
    • Напишите сообщение или пришлите файл (txt, md, pdf, docx) — отвечу выбранным ассистентом.
    • 👍 / 👎 под ответом — оценка; после 👎 расскажите, что было не так.
    • 🔄 — другой вариант ответа; оценка одного из двух покажет, какой лучше.
    • Ваши оценки обучают следующую версию модели.

    <b>Команды</b>
    /assistant — выбрать ассистента
    /chat, /paraphrase, /summarize, /moderate, /label — переключиться сразу
    /labels — метки ассистента разметки (админы: /labels a, b, c)
    Кнопки под пересказами и перефразами меняют стиль, формат или язык.
    /reset — забыть разговор в этом чате
    /export_me — все ваши данные файлом; /forget — удалить их
    /report — ответом на моё сообщение: передать его модераторам
    /help — эта справка

    В группах я отвечаю, только когда меня упоминают или отвечают на моё сообщение.
reset-done = 🧹 Готово: я забыл наш разговор. Следующее сообщение начнёт новый.
command-start = Начать
command-help = Как пользоваться ботом
command-assistant = Выбрать ассистента
command-reset = Забыть разговор
command-report = Передать ответ модераторам
command-paraphrase = Перефразировать текст
command-summarize = Пересказать текст или файл
command-moderate = Проверить текст на нарушения
command-label = Разметить элемент или файл CSV/XLSX
command-labels = Метки разметки

## Ассистенты
assistant-pick = Какой ассистент будет отвечать в этом чате?
assistant-switched = Ассистент: { $title }
assistant-chat-title = Чат
assistant-chat-description = Общие вопросы и разговор.
assistant-paraphrase-title = Перефразирование
assistant-paraphrase-description = Пришлите текст — я перепишу его, сохранив смысл.
assistant-summarize-title = Пересказ
assistant-summarize-description = Пришлите текст или файл (txt, md, pdf, docx) — я кратко перескажу его, даже очень длинный.
assistant-moderate-title = Модерация
assistant-moderate-description = Пришлите текст — я скажу, нарушает ли он обычные правила (спам, оскорбления, угрозы, контент для взрослых).
assistant-label-title = Разметка
assistant-label-description = Пришлите элемент — я размечу его метками этого чата (/labels), или пришлите файл CSV/XLSX, чтобы разметить каждую строку.

## Оценки
feedback-thanks = Спасибо! 👍
feedback-why = Извините. Что было не так?
feedback-reason-saved = Записал, спасибо.
feedback-ask-comment = Если хотите, опишите одним сообщением, каким должен был быть ответ, — или отправьте /skip.
feedback-comment-saved = Спасибо, комментарий сохранён. Он поможет следующей версии.
feedback-comment-skipped = Хорошо, без комментария.
feedback-comment-too-long = Комментарий слишком длинный (не больше { $limit } символов). Сократите его, пожалуйста.
feedback-unknown = Этот ответ больше недоступен.
feedback-not-yours = Оценить ответ может только тот, кто задал вопрос.
callback-invalid = Эта кнопка больше не действует.
regenerating = Пишу другой вариант…
reason-wrong = ❌ Неверно
reason-unhelpful = 🤷 Бесполезно
reason-unsafe = ⚠️ Небезопасно
reason-style = ✍️ Стиль
reason-other = 💬 Другое
button-retry = 🔁 Повторить

## Проблемы со вводом
empty-message = Сообщение пустое — напишите мне текст.
unknown-command = Я не знаю такой команды. Список команд — /help.
only-text = Пока я понимаю только текст и файлы (txt, md, pdf, docx, html, csv).
file-unsupported = Такой тип файла я не читаю. Пришлите текст или файл txt, md, pdf, docx, html или csv.
file-too-big = Файл слишком большой (не больше { $limit_kb } КБ).
file-not-utf8 = Не удалось распознать кодировку файла; сохраните его в UTF-8 и пришлите снова.
file-empty = Файл пустой.

## Ошибки
error-generic = У меня что-то пошло не так. Попробуйте ещё раз.
error-model-unavailable = 😔 Извините, модель сейчас недоступна. Ваше сообщение сохранено — нажмите «Повторить» чуть позже.
error-model-slow = 😔 Извините, модель отвечает слишком долго. Ваше сообщение сохранено — нажмите «Повторить».
error-model-empty = 😔 Извините, модель вернула пустой ответ. Нажмите «Повторить».
answer-withheld = 🙅 Я не могу раскрывать свои инструкции или что-либо за пределами этого разговора. Спросите что-нибудь другое.
error-input-too-long = Сообщение слишком длинное ({ $length } символов, предел { $limit }). Сократите его или разбейте на части.
error-not-allowed = У вас нет прав на это действие.
error-not-found = Не найдено.
error-no-token = Не задан TELEGRAM_BOT_TOKEN.
error-no-webhook-url = В режиме webhook нужен WEBHOOK_URL.

## Отчёты об обучении и команды администратора
report-run = 🧪 Обучение #{ $run } — { $assistant } ({ $method })
    Итог: { $status } · адаптер { $adapter }
    Примеры: { $train } для обучения, { $held_out } отложено · { $seconds } с
    Точность предпочтений на отложенных { $accuracy } (у { $against } — { $active_accuracy }), запас награды { $margin } (против { $active_margin })
    { $reason }
report-status-succeeded = ✅ запущен на канареечную долю
report-status-rejected = ❌ отклонён на проверке
report-status-refused = ⏸ не запускался
report-status-failed = 💥 ошибка
report-status-running = ⏳ идёт
report-status-queued = ⏳ в очереди
report-gate-pairs = Отложенные пары по одной: лучше, чем { $against }, на { $better }, хуже на { $worse } (критерий знаков p = { $p }; отклоняется ниже { $alpha })
report-judge = LLM-судья: доля побед кандидата { $win_rate } на { $prompts } отложенных вопросах (ничьих: { $ties })
report-judge-decisive = LLM-судья: доля побед кандидата { $win_rate } на { $prompts } отложенных вопросах: побед { $wins }, поражений { $losses }, ничьих { $ties } (критерий знаков p = { $p })
report-judge-none = LLM-судья: — ({ $note })
report-task = Проверка задачи, { $metric } на { $items } примерах оценки: кандидат { $candidate }, заменяемая модель { $active }; кандидат прав на { $better } примерах, где она ошиблась, и ошибся на { $worse }, где она права (критерий знаков p = { $p })
report-task-length = Проверка задачи засчитывает пересказ длиной до { $bound }× исходного текста
report-task-none = Проверка задачи: — ({ $note })
report-reward-model = Модель награды { $name }: средняя оценка { $candidate } (кандидат) против { $active } (действующий), доля побед кандидата { $win_rate } на { $prompts } вопросах
report-reward-model-none = Модель награды: — ({ $note })
report-agreement = Судья и модель награды согласны на { $agreed } из { $compared } вопросов ({ $agreement }; ещё { $undecided } — ничья у одного из них)
report-agreement-none = Судья и модель награды: — ({ $note })
report-disagreement = ≠ «{ $prompt }»: судья за { $judge }, модель награды за { $reward_model }
report-side-candidate = кандидата
report-side-active = действующий ответ
admin-only = Эта команда только для администраторов.
adapters-none = Адаптеров пока нет. Они появятся после первого обучения.
adapters-line = { $name } — { $status }
adapters-usage-deploy = Использование: /deploy <имя адаптера>, например /deploy chat-v3
adapters-usage-rollback = Использование: /rollback <ассистент>, например /rollback chat
adapters-usage-train = Использование: /train <ассистент> [dpo|orpo|kto]
adapters-deployed = { $name } теперь { $status }.
adapters-rolled-back = { $assistant } теперь отвечает через { $current }.
adapters-base-model = базовую модель
train-queued = Обучение { $assistant } ({ $method }) поставлено в очередь. Пришлю отчёт.
error-adapter-server = Сервер модели отказал или недоступен: { $detail }
error-adapter-already = { $name } уже { $status ->
    [active] активен
   *[canary] на канарейке
}.
error-adapter-no-canary = У { $assistant } нет канарейки, которую можно продвинуть.
error-adapter-nothing-to-roll-back = { $assistant } отвечает базовой моделью: откатывать нечего.
error-adapter-not-reward-model = { $name } — не модель вознаграждения.
error-adapter-unknown = Такого адаптера нет: { $name }. Список — /adapters.

## Ассистенты: варианты, структурированные ответы, настройки чата
assistant-disabled = { $title } выключен в этом чате.
assistant-disabled-now = { $title } теперь выключен в этом чате.
assistant-enabled = { $title } теперь включён в этом чате.
assistants-usage = Использование: /enable <ассистент> или /disable <ассистент>. В этом чате: { $states }
chat-admin-only = Это могут менять только админы бота и администраторы этой группы.
state-on = включена
state-off = выключена
option-style-neutral = Нейтрально
option-style-formal = Официально
option-style-friendly = Дружелюбно
option-style-concise = Короче
option-style-simpler = Проще
option-target-same = Тот же язык
option-target-en = → English
option-target-ru = → Русский
option-format-short = Кратко
option-format-line = Одна строка
option-format-bullets = Пункты
option-format-detailed = Подробно
option-format-facts = Ключевые факты
button-meaning-check = 🔍 Смысл
meaning-kept = ✅ Смысл сохранён (сходство { $similarity }).
meaning-partly = ⚠️ Смысл сохранён частично (сходство { $similarity }): сверьте с оригиналом.
meaning-changed = ❌ Смысл изменился (сходство { $similarity }).
meaning-copy = ⚠️ Это почти копия оригинала.
meaning-missing-numbers = В пересказе пропали числа: { $numbers }
summary-progress = 📖 Читаю длинный текст: часть { $done } из { $total }…
best-of-n-progress = ✍️ Пишу несколько вариантов ответа ({ $n }) и выбираю лучший…
error-structured-output = 😔 Не удалось разобрать ответ модели даже со второй попытки. Нажмите «Повторить».
moderation-verdict = { $icon } { $label } — уверенность { $confidence }
    Причина: { $reason }
    Рекомендуемое действие: { $action }
moderation-label-ok = Нормально
moderation-label-spam = Спам
moderation-label-abuse = Оскорбление
moderation-label-threat = Угроза
moderation-label-adult = Контент для взрослых
moderation-label-other = Другой вредный контент
moderation-action-none = нет
moderation-action-warn = предупредить
moderation-action-delete = удалить
moderation-action-review = передать модераторам
moderation-status = 🛡 Модерация каждого сообщения: { $state }. Автоматическое действие: { $action } при уверенности ≥ { $threshold }; вредные и сомнительные сообщения уходят модераторам.
moderation-usage = Использование: /moderation on|off, /moderation action none|warn|delete, /moderation threshold 0.5–1.0
moderation-groups-only = Модерация каждого сообщения работает в группах. Здесь переключитесь на /moderate и пришлите текст.
moderation-warning = ⚠️ Это сообщение может нарушать правила чата ({ $label }). Модераторы посмотрят.
moderation-deleted = 🗑 Сообщение удалено: { $label }.
label-result = 🏷 { $label } — уверенность { $confidence }
labels-current = Набор меток «{ $name }»:
labels-saved = ✅ Сохранено. Новые элементы размечаются этим набором.
labels-invalid = Набор меток неверен: { $detail }. Нужно от 2 до { $max } разных меток, например: /labels вопрос, жалоба, благодарность
labels-invalid-yaml = Этот YAML-файл — не набор меток. Нужен список «labels:» из названий или из названий с описаниями.
labels-problem-too-few = нужно хотя бы { $min } { $min ->
    [one] метку
    [few] метки
   *[other] меток
}
labels-problem-too-many = можно не больше { $max } { $max ->
    [one] метки
   *[other] меток
}
labels-problem-unknown-field = неизвестное поле «{ $field }»
labels-problem-missing = не хватает поля «{ $field }»
labels-problem-too-long = поле «{ $field }» слишком длинное (не больше { $max_length } { $max_length ->
    [one] символа
   *[other] символов
})
labels-problem-empty = поле «{ $field }» пустое
labels-problem-not-list = поле «{ $field }» должно быть списком
labels-problem-bad-name = метка — это от 1 до 32 букв, цифр, пробелов, «-» или «_»
labels-problem-duplicate = названия меток должны быть разными
labels-problem-other = { $message }
labels-problem-in-label = метка { $number }: { $problem }
labels-problem-in-named-label = метка { $number } «{ $value }»: { $problem }
labels-problem-in-set-name = название набора: { $problem }
labels-file-yaml = Пришлите набор меток файлом .yaml с подписью /labels.
file-broken = Не удалось открыть файл: похоже, он повреждён.
file-encrypted = Файл защищён паролем, я не могу его прочитать.
file-no-text = В файле не нашлось текста (скан? картинки я читать не умею).
label-file-progress = 🏷 Размечаю таблицу: { $done } из { $total } строк…
label-file-done = ✅ Размечено { $rows } строк: { $labeled } с меткой, { $review } отмечены для проверки (низкая уверенность), { $invalid } без верной метки. Результат ниже.
label-file-queued = 👀 { $count } из них отправлены модераторам на проверку: их решения учат ассистента разметки.
label-file-queued-first = 👀 Первые { $count } из { $total } строк для проверки отправлены модераторам: их решения учат ассистента разметки.
label-file-queued-before = 👀 Строки для проверки уже у модераторов: эту таблицу уже размечали.
label-file-review-failed = ⚠️ Сейчас не получилось отправить строки на проверку модераторам; в файле ниже они отмечены (needs_review).
label-file-no-rows = В таблице нет строк для разметки: нужна строка заголовков и хотя бы одна строка под ней.
label-file-no-column = В таблице нет столбца «{ $column }». Столбцы: { $columns }.
label-file-broken = Не удалось прочитать таблицу: файл, похоже, повреждён. Пришлите файл .csv или .xlsx.
label-file-too-many-rows = В таблице больше { $limit } строк. Разбейте её на части не больше { $limit } строк.
label-batch-stopped = 😔 Модель перестала отвечать после { $done } из { $total } строк. Размеченные строки сохранены; пришлите тот же файл позже — я продолжу с того же места.
label-resume-mismatch = { $out } относится к разметке другого файла или с другими настройками. Начните заново с --restart или выберите другой --out.
label-resume-broken = { $out } изменён после остановки, продолжить разметку нельзя. Начните заново с --restart.
label-out-exists = { $out } уже существует. Перезапишите его с --restart или выберите другой --out.
label-model-down = Сервер модели { $url } не отвечает. Запустите его командой `loopgram serve-model` или задайте LLM_BASE_URL. Сохранено { $done } из { $total } строк в { $out }.

## Проверка людьми
review-card-title = 🔎 Проверка #{ $id } · { $assistant } · { $reason }
review-reason-thumbs_down = 👎 от пользователя
review-reason-moderation = 🛡 вердикт модерации
review-reason-low_confidence = 🏷 неуверенная метка
review-reason-report = 🚩 жалоба
review-card-gone = Ответ удалён; элемент закрыт.
review-card-prompt = ❓ Вопрос: { $text }
review-card-answer = 💬 Ответ: { $text }
review-card-no-answer = (ответа нет: модель не ответила)
review-card-user = 🗣 Причина пользователя: { $reason } · комментарий: { $comment }
review-card-note = 📝 { $note }
review-card-adapter = 🧩 Адаптер: { $adapter }
review-card-labels = 🏷 Метки: { $labels }
review-card-decided = ☑️ { $status }: { $by }
review-card-correction = ✏️ Исправление: { $text }
review-status-pending = ожидает
review-status-approved = Одобрено
review-status-rejected = Отклонено
review-status-corrected = Исправлено
review-status-withdrawn = Отозвано
review-status-closed = Закрыто
review-button-approve = ✅ Одобрить
review-button-reject = ❌ Отклонить
review-button-correct = ✏️ Исправить
review-button-skip = ⏭ Пропустить
review-done = Решение принято. Спасибо!
review-recorded = Записано. Этот элемент решает ещё один модератор.
review-duplicate = Вы уже приняли решение по этому элементу.
review-taken = Этим элементом занимается другой модератор.
review-closed = По этому элементу уже принято решение.
review-gone = Этого элемента больше нет: ответ удалён.
review-not-moderator = Проверять ответы могут только модераторы.
review-skipped = Пропущено.
review-correct-ask = Пришлите правильный ответ следующим сообщением.
review-correct-prompt = ✏️ { $name }, пришлите правильный ответ для #{ $id } следующим сообщением (или /cancel).
review-correct-labels = Напишите одну из меток, можно с причиной: «метка: причина».
review-correct-cancelled = Исправление отменено; элемент вернулся в очередь.
review-correction-invalid = Такой метки нет: { $labels }. Напишите «метка» или «метка: причина».
review-correction-length = Исправление должно быть от 1 до { $limit } символов. Пришлите его ещё раз.
review-corrected-for-user = ✏️ Модератор исправил этот ответ:
    { $text }
review-empty = 🎉 Очередь проверки пуста.
review-report-usage = Ответьте на одно из моих сообщений командой /report (можно с причиной), чтобы передать его модераторам.
review-reported = 🚩 Спасибо: модераторы посмотрят этот ответ.
role-usage = Использование: /grant <id или @username> moderator|admin, /revoke <пользователь>, /ban <пользователь>, /unban <пользователь> — или ответом на сообщение человека.
role-unknown-user = Я не знаю { $ref }: сначала этот человек должен мне написать.
role-set = { $user } теперь { $role }.
user-banned = { $user } заблокирован: я не буду ему отвечать.
user-unbanned = { $user } больше не заблокирован.
stats-queue = 📋 Очередь проверки: { $pending } ожидают ({ $claimed } в работе), самый старый — { $oldest }. Решено за 7 дней: { $decided }; время проверки: медиана { $median }, p90 { $p90 }.
stats-moderator = 👤 { $id }: ✅ { $approve } ❌ { $reject } ✏️ { $correct } · согласие κ { $kappa }
stats-chart-title = Доля 👍 по ассистентам и адаптерам за 30 дней
duration-minutes = { $n } мин
duration-hours = { $n } ч
stats-chart-plot-title = Доля положительных оценок по ассистентам и адаптерам за 30 дней
stats-satisfaction-none = 😊 Оценка удовлетворённости: ни у одного ассистента ещё нет модели вознаграждения (её обучает `loopgram train --method reward`).
stats-satisfaction-title = 😊 Оценка удовлетворённости, { $assistant } (модель вознаграждения { $model }), калибровка по { $rated } оценкам: Brier { $brier }, ошибка калибровки { $ece }
stats-satisfaction-uncalibrated = 😊 Оценка удовлетворённости, { $assistant } (модель вознаграждения { $model }): мало оценок для калибровки (оценок: { $rated }, нужно { $needed }, и 👍, и 👎).
stats-satisfaction-unscored = 😊 Оценка удовлетворённости, { $assistant } (модель вознаграждения { $model }): ответы ещё не оценены; оценка идёт каждые { $minutes } мин.
stats-satisfaction-adapter = • { $adapter }: предсказанная доля 👍 { $predicted } (ответов: { $answers }) · наблюдаемая { $observed } (оценок: { $rated })
stats-satisfaction-adapter-uncalibrated = • { $adapter }: оценено ответов: { $answers } · наблюдаемая доля 👍 { $observed } (оценок: { $rated })
stats-satisfaction-more = • … и ещё старых адаптеров: { $n } (все показывает `loopgram satisfaction`)
stats-calibration-title = 🎯 Калибровка оценки удовлетворённости: предсказанная вероятность 👍 против наблюдаемой доли, с числом оценок в каждом интервале
stats-calibration-plot-title = Калибровка предсказанной вероятности положительной оценки
stats-calibration-x = предсказанная вероятность положительной оценки (вне обучающей выборки)
stats-calibration-y = наблюдаемая доля положительных оценок
stats-calibration-count = оценок
stats-calibration-perfect = идеальная калибровка
review-card-closed-gone = 🔒 Закрыто: проверяемый ответ удалён (например, автор воспользовался /forget).

## База знаний
kb-unavailable = База знаний сейчас недоступна. Попробуйте позже.
kb-unavailable-note = ⚠️ База знаний сейчас недоступна: этот ответ без источников.
kb-sources-title = 📚 Источники:
kb-sources-gone = Источники этого ответа удалены из базы знаний.
kb-nothing = Ничего подходящего не нашлось.
kb-deleted = Документ { $id } удалён из базы знаний.
kb-no-document = Документа { $id } нет.
kb-line = #{ $id } { $name } — фрагментов: { $chunks }, { $status }, { $scope }
kb-scope-chat = этот чат
kb-scope-all = все чаты
kb-empty = База знаний пуста. Пришлите файл с подписью /kb, чтобы добавить его.
kb-usage = Использование: /kb (список), /kb search <вопрос>, /kb delete <id>; файл с подписью /kb добавляет документ.
kb-indexing = 📥 Индексирую { $name }…
kb-added = ✅ Добавлен { $name }: фрагментов — { $chunks }.
kb-replaced = ✅ Обновлён { $name }: фрагментов — { $chunks } (старая версия заменена).
kb-skipped = { $name } не изменился; делать нечего.
kb-injection-warning = ⚠️ Фрагментов, похожих на инструкции для модели (prompt injection): { $count }. Они проиндексированы как данные и выполняться не будут; проверьте документ.
review-card-sources = 📚 Источники: { $sources }

## limits
limits-user-throttled = ⏳ Вы спрашиваете быстрее, чем я успеваю отвечать. Пожалуйста, подождите около { $seconds } с и спросите снова — я с радостью помогу.
limits-queue-position = ⏳ Сейчас много вопросов. Вы { $position }-й в очереди; ответ появится здесь.

## privacy
command-export_me = Получить все мои данные файлом
command-forget = Удалить все мои данные
privacy-private-only = Пожалуйста, используйте эту команду в личном чате со мной: ваши данные показываются и обрабатываются только там.
forget-confirm = 🗑 Удалить всё, что я о вас храню? Ваши вопросы и мои ответы, ваши оценки и комментарии и построенные из них данные для обучения будут удалены во всех чатах. Пары, на которых модель уже обучалась, останутся обезличенными (в них ничего не указывает на вас). Отменить это нельзя.
forget-button-yes = 🗑 Да, удалить
forget-button-no = ✖️ Нет, оставить
forget-cancelled = Хорошо, ничего не удалено.
forget-done = ✅ Готово: удалено ответов — { $interactions }, оценок — { $ratings }. Пар, уже использованных для обучения, сохранено обезличенными — { $kept }. Если напишете снова, начнём с чистого листа.
forget-not-yours = Эта кнопка не ваша или недействительна: ничего не удалено.
forget-expired = Срок подтверждения истёк; ничего не удалено. Отправьте /forget ещё раз.
export-caption = 📦 Ваши данные: ответов — { $interactions }, оценок — { $ratings }, комментариев — { $comments } (JSON).
export-compressed = Файл сжат gzip, чтобы уложиться в лимит Telegram.
export-too-big = Ваша выгрузка весит { $size } МБ — больше лимита Telegram на файлы ({ $limit } МБ), даже в сжатом виде. Пожалуйста, попросите её у администратора бота.

## playground
playground-starting = Запускаю песочницу: база данных, воркер, сервер модели и бот (при первом запуске модель готовится около полуминуты)…
playground-ready = 🧪 Песочница готова: откройте { $url } в браузере.
playground-local-only = Слушаю только { $host }: страницу можно открыть лишь с этого компьютера. Чтобы открыть её в своей сети, укажите --host 0.0.0.0.
playground-exposed = ⚠️ Слушаю { $host }: любой, кто достучится до этой машины, откроет страницу и сможет действовать от имени любого её участника, включая администратора (входа по паролю нет).
playground-stop = Остановить: Ctrl+C.
playground-stopped = Песочница остановлена; её данные остались в { $dir } (--reset начинает с чистого листа).
playground-bad-lang = Неизвестный язык «{ $code }»: укажите ru или en.
playground-cannot-listen = Не могу запустить песочницу на { $host }:{ $port } ({ $error }): выберите другой --port (0 — любой свободный).

## operations
backup-done = Резервная копия записана в { $path }: { $rows } строк в { $tables } таблицах и { $points } точек базы знаний (ревизия базы { $revision }, { $size } КБ).
backup-exists = { $path } уже существует: выберите другой путь или добавьте --force, чтобы перезаписать.
backup-no-folder = Папки { $path } нет: сначала создайте её.
backup-unmigrated = В базе данных ещё нет схемы, копировать нечего (сначала выполните `loopgram db upgrade`).
backup-not-found = Резервной копии { $path } нет.
backup-broken = { $path } — не целая резервная копия loopgram ({ $detail }). Ничего не изменено.
backup-kb-unavailable = Базу знаний не открыть ({ $detail }): остановите процесс, который держит её локальную папку (бота), или проверьте QDRANT_URL. Ничего не изменено.
backup-failed = Резервное копирование или восстановление не удалось: { $detail }. Ничего не изменено.
backup-progress = { $what }: { $count }
restore-done = Восстановлено из { $path }: { $rows } строк в { $tables } таблицах и { $points } точек базы знаний (ревизия базы { $revision }).
restore-revision-mismatch = Копия сделана с базы ревизии { $archive }, а эта база на ревизии { $current }: восстанавливайте в базу ревизии { $archive } (`loopgram db upgrade { $archive }` на пустой базе) или той версией loopgram, которая сделала копию. Ничего не изменено.
restore-unknown-revision = Копия сделана с базы ревизии { $archive }, которой эта версия loopgram не знает (эта база на ревизии { $current }): восстанавливайте той версией, которая сделала копию. Ничего не изменено.
restore-not-empty = Цель не пуста ({ $rows } строк в базе, { $points } точек в базе знаний): восстанавливайте в пустую базу или добавьте --force, чтобы заменить всё. Ничего не изменено.

## loadtest
loadtest-starting = Нагрузочный тест: { $users } имитированных пользователей, { $minutes } мин (модель: { $model }); бот, эмулятор Bot API и модель слушают только 127.0.0.1…
loadtest-progress = { $elapsed } / { $total } с · ответов { $answered } · без ответа { $failed }
loadtest-title = Нагрузочный тест: { $users } пользователей, { $seconds } с, модель { $model }
loadtest-col-figure = показатель
loadtest-col-value = значение
loadtest-answered = получили ответ
loadtest-failed = без ответа (за { $timeout } с)
loadtest-throttled = попросили подождать
loadtest-latency = задержка ответа модели p50 / p95
loadtest-updates-rate = апдейтов в секунду (от пользователей)
loadtest-api-rate = вызовов Bot API в секунду (от бота)
loadtest-limit-violations = отправок, отклонённых флуд-контролем Telegram
loadtest-kinds-title = По действиям
loadtest-col-kind = действие
loadtest-col-sent = отправлено
loadtest-col-answered = с ответом
loadtest-col-failed = без ответа
loadtest-col-p50 = p50
loadtest-col-p95 = p95
loadtest-kind-question = вопрос (личный чат)
loadtest-kind-group-question = вопрос (группа)
loadtest-kind-regenerate = 🔄 другой вариант
loadtest-kind-press = нажатие 👍 / 👎
loadtest-kind-help = /help
loadtest-memory-title = Память (RSS, МБ): рост от конца разогрева (первые { $warmup } %) до конца
loadtest-col-process = процесс
loadtest-col-pid = pid
loadtest-col-start = в начале
loadtest-col-warm = после разогрева
loadtest-col-end = в конце
loadtest-col-peak = пик
loadtest-col-growth = рост
loadtest-col-slope = МБ/мин
loadtest-col-verdict = вывод
loadtest-verdict-flat = ровно
loadtest-verdict-growing = растёт
loadtest-verdict-unknown = мало замеров
loadtest-not-judged = не оценивается
loadtest-memory-verdict = Память: { $verdict } (граница: рост меньше { $pct } % и меньше { $mb } МБ для каждого оцениваемого процесса).
loadtest-shared-host = Машина: { $cpus } CPU, средняя загрузка { $load }; цифры зависят от всего, что ещё на ней работает.
loadtest-bad-model = Неизвестная модель «{ $model }»: укажите fast или builtin.
loadtest-process-died = Процесс «{ $what }» остановился (код { $code }): { $log }
loadtest-not-ready = { $what } не был готов за { $seconds } с: { $log }
loadtest-driver-note = «driver» — этот процесс: эмулятор Bot API (он хранит все вызовы и сообщения и поэтому растёт), имитированные пользователи и быстрая модель; он не оценивается.

## reward
error-reward-model-not-servable = { $name } — модель вознаграждения: она оценивает ответы и не обслуживает запросы; развернуть можно только адаптер политики (имя-vN).
