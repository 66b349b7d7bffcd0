"""What nextbest says to a customer about their data, in their language.

Each text has a key and one template per language (Danish, Dutch, German, English, Spanish
at least); a template's fields (``{topic}``) are the same in every language, which
``tests/unit/test_transparency_texts.py`` checks. ``say(key, language, **facts)`` renders one;
a language nextbest has no texts for reads English.

Plain language is the point: the customer reads "You viewed mortgage pages 5 times in the
last 14 days", not a feature name. Names the bank chose (an offer's, a topic's, a campaign's)
are shown as the catalog writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "TEXTS", "language_of", "say"]

#: the languages every text is written in
LANGUAGES: tuple[str, ...] = ("en", "da", "nl", "de", "es")
DEFAULT_LANGUAGE = "en"

_T = Mapping[str, str]

#: key -> language -> template
TEXTS: Mapping[str, _T] = {
    # ------------------------------------------------------------------ data sources
    "source.behavioral": {
        "en": "Your visits to our website and app",
        "da": "Dine besøg på vores hjemmeside og i vores app",
        "nl": "Uw bezoeken aan onze website en app",
        "de": "Ihre Besuche auf unserer Website und in unserer App",
        "es": "Sus visitas a nuestra web y nuestra app",
    },
    "source.behavioral.about": {
        "en": "the pages you viewed, what you searched for and the steps you took in forms",
        "da": "de sider, du har set, hvad du har søgt efter, og de trin, du har taget i formularer",
        "nl": "de pagina's die u bekeek, waar u naar zocht en de stappen die u "
        "in formulieren zette",
        "de": "die Seiten, die Sie angesehen haben, Ihre Suchen und Ihre Schritte in Formularen",
        "es": "las páginas que vio, lo que buscó y los pasos que dio en los formularios",
    },
    "source.transactional": {
        "en": "Your accounts and payments",
        "da": "Dine konti og betalinger",
        "nl": "Uw rekeningen en betalingen",
        "de": "Ihre Konten und Zahlungen",
        "es": "Sus cuentas y pagos",
    },
    "source.transactional.about": {
        "en": "balances, transactions and account events from our banking systems",
        "da": "saldi, posteringer og kontohændelser fra vores banksystemer",
        "nl": "saldi, transacties en rekeninggebeurtenissen uit onze banksystemen",
        "de": "Salden, Buchungen und Kontoereignisse aus unseren Banksystemen",
        "es": "saldos, movimientos y eventos de cuenta de nuestros sistemas bancarios",
    },
    "source.crm": {
        "en": "What you told us",
        "da": "Det, du har fortalt os",
        "nl": "Wat u ons hebt verteld",
        "de": "Was Sie uns mitgeteilt haben",
        "es": "Lo que usted nos ha contado",
    },
    "source.crm.about": {
        "en": "the details in your customer record and the products you hold",
        "da": "oplysningerne i din kundeprofil og de produkter, du har",
        "nl": "de gegevens in uw klantdossier en de producten die u hebt",
        "de": "die Angaben in Ihrem Kundenkonto und die Produkte, die Sie besitzen",
        "es": "los datos de su ficha de cliente y los productos que tiene",
    },
    "source.contextual": {
        "en": "The moment itself",
        "da": "Selve øjeblikket",
        "nl": "Het moment zelf",
        "de": "Der Moment selbst",
        "es": "El momento en sí",
    },
    "source.contextual.about": {
        "en": "the page you are on, your device and the time of day, not kept afterwards",
        "da": "den side, du er på, din enhed og tidspunktet, ikke gemt bagefter",
        "nl": "de pagina waarop u bent, uw apparaat en het tijdstip, niet bewaard achteraf",
        "de": "die Seite, auf der Sie sind, Ihr Gerät und die Uhrzeit, danach nicht gespeichert",
        "es": "la página en la que está, su dispositivo y la hora, sin guardarlo después",
    },
    "source.third_party": {
        "en": "Other companies",
        "da": "Andre virksomheder",
        "nl": "Andere bedrijven",
        "de": "Andere Unternehmen",
        "es": "Otras empresas",
    },
    "source.third_party.about": {
        "en": "information partners gave us about you",
        "da": "oplysninger, som samarbejdspartnere har givet os om dig",
        "nl": "informatie die partners ons over u gaven",
        "de": "Informationen, die Partner uns über Sie gegeben haben",
        "es": "información que otras empresas colaboradoras nos dieron sobre usted",
    },
    "source.security": {
        "en": "Our fraud protection",
        "da": "Vores beskyttelse mod svindel",
        "nl": "Onze fraudebeveiliging",
        "de": "Unser Betrugsschutz",
        "es": "Nuestra protección contra el fraude",
    },
    "source.security.about": {
        "en": "signs that someone else may be using your account, never used to sell to you",
        "da": "tegn på, at en anden måske bruger din konto, aldrig brugt til salg",
        "nl": "signalen dat iemand anders uw rekening gebruikt, nooit gebruikt om te verkopen",
        "de": "Hinweise, dass jemand anderes Ihr Konto nutzt, nie für den Verkauf verwendet",
        "es": "señales de que otra persona usa su cuenta, nunca para venderle",
    },
    # ------------------------------------------------------------------ purposes
    "purpose.personalization": {
        "en": "Showing you what fits you on our website and app",
        "da": "At vise dig det, der passer til dig, på vores hjemmeside og i vores app",
        "nl": "U op onze website en app laten zien wat bij u past",
        "de": "Ihnen auf unserer Website und in unserer App zu zeigen, was zu Ihnen passt",
        "es": "Mostrarle lo que le encaja en nuestra web y nuestra app",
    },
    "purpose.marketing": {
        "en": "Offering you products",
        "da": "At tilbyde dig produkter",
        "nl": "U producten aanbieden",
        "de": "Ihnen Produkte anzubieten",
        "es": "Ofrecerle productos",
    },
    "purpose.analytics": {
        "en": "Measuring and improving our service",
        "da": "At måle og forbedre vores service",
        "nl": "Onze dienstverlening meten en verbeteren",
        "de": "Unseren Service zu messen und zu verbessern",
        "es": "Medir y mejorar nuestro servicio",
    },
    "purpose.security": {
        "en": "Protecting your account against fraud and identity theft (never to sell to you)",
        "da": "At beskytte din konto mod svindel og identitetstyveri (aldrig til salg)",
        "nl": "Uw rekening beschermen tegen fraude en identiteitsdiefstal (nooit om te verkopen)",
        "de": "Ihr Konto vor Betrug und Identitätsdiebstahl zu schützen (nie für den Verkauf)",
        "es": "Proteger su cuenta contra el fraude y la suplantación de identidad "
        "(nunca para venderle)",
    },
    "purpose.advisor_contact": {
        "en": "Letting an advisor offer to call you",
        "da": "At lade en rådgiver tilbyde at ringe til dig",
        "nl": "Een adviseur laten aanbieden u te bellen",
        "de": "Dass ein Berater Ihnen einen Rückruf anbietet",
        "es": "Que un asesor le ofrezca llamarle",
    },
    # ------------------------------------------------------------------ legal bases
    "basis.consent": {
        "en": "your consent",
        "da": "dit samtykke",
        "nl": "uw toestemming",
        "de": "Ihre Einwilligung",
        "es": "su consentimiento",
    },
    "basis.contract": {
        "en": "our agreement with you",
        "da": "vores aftale med dig",
        "nl": "onze overeenkomst met u",
        "de": "unseren Vertrag mit Ihnen",
        "es": "nuestro contrato con usted",
    },
    "basis.legal_obligation": {
        "en": "a legal obligation",
        "da": "en retlig forpligtelse",
        "nl": "een wettelijke verplichting",
        "de": "eine rechtliche Verpflichtung",
        "es": "una obligación legal",
    },
    "basis.legitimate_interest": {
        "en": "our legitimate interest",
        "da": "vores legitime interesse",
        "nl": "ons gerechtvaardigd belang",
        "de": "unser berechtigtes Interesse",
        "es": "nuestro interés legítimo",
    },
    # ------------------------------------------------------------------ reasons
    "reason.topic_interest.once": {
        "en": "You viewed {topic} pages once in the last {days} days",
        "da": "Du har set sider om {topic} én gang inden for de sidste {days} dage",
        "nl": "U bekeek de afgelopen {days} dagen één keer pagina's over {topic}",
        "de": "Sie haben in den letzten {days} Tagen einmal Seiten zu {topic} angesehen",
        "es": "Ha visto páginas sobre {topic} una vez en los últimos {days} días",
    },
    "reason.topic_interest": {
        "en": "You viewed {topic} pages {count} times in the last {days} days",
        "da": "Du har set sider om {topic} {count} gange inden for de sidste {days} dage",
        "nl": "U bekeek de afgelopen {days} dagen {count} keer pagina's over {topic}",
        "de": "Sie haben in den letzten {days} Tagen {count}-mal Seiten zu {topic} angesehen",
        "es": "Ha visto páginas sobre {topic} {count} veces en los últimos {days} días",
    },
    "reason.funnel_stage.considering": {
        "en": "You are looking into a {topic} product",
        "da": "Du undersøger et {topic}-produkt",
        "nl": "U oriënteert zich op een product voor {topic}",
        "de": "Sie informieren sich über ein Produkt zu {topic}",
        "es": "Está informándose sobre un producto de {topic}",
    },
    "reason.funnel_stage.applying": {
        "en": "You started an application for a {topic} product",
        "da": "Du er begyndt på en ansøgning om et {topic}-produkt",
        "nl": "U bent een aanvraag begonnen voor een product voor {topic}",
        "de": "Sie haben einen Antrag für ein Produkt zu {topic} begonnen",
        "es": "Ha empezado una solicitud de un producto de {topic}",
    },
    "reason.funnel_stage.submitted": {
        "en": "You applied for a {topic} product",
        "da": "Du har ansøgt om et {topic}-produkt",
        "nl": "U hebt een product voor {topic} aangevraagd",
        "de": "Sie haben ein Produkt zu {topic} beantragt",
        "es": "Ha solicitado un producto de {topic}",
    },
    "reason.service_message": {
        "en": "A message about your banking: {name}",
        "da": "En besked om dine bankforhold: {name}",
        "nl": "Een bericht over uw bankzaken: {name}",
        "de": "Eine Mitteilung zu Ihren Bankgeschäften: {name}",
        "es": "Un aviso sobre su banca: {name}",
    },
    "reason.offer_reason": {
        "en": "The bank's reason: {text}",
        "da": "Bankens begrundelse: {text}",
        "nl": "De reden van de bank: {text}",
        "de": "Die Begründung der Bank: {text}",
        "es": "El motivo del banco: {text}",
    },
    "reason.segment": {
        "en": "You are in the group \u201c{segment}\u201d the bank targets with this",
        "da": "Du er i gruppen \u201c{segment}\u201d, som banken retter dette mod",
        "nl": "U hoort bij de groep \u201c{segment}\u201d waarop de bank dit richt",
        "de": "Sie gehören zur Gruppe \u201e{segment}\u201c, an die sich die Bank damit richtet",
        "es": "Está en el grupo \u201c{segment}\u201d al que el banco dirige esto",
    },
    "reason.campaign_priority": {
        "en": "The bank is promoting \u201c{campaign}\u201d right now",
        "da": "Banken promoverer \u201c{campaign}\u201d lige nu",
        "nl": "De bank promoot op dit moment \u201c{campaign}\u201d",
        "de": "Die Bank bewirbt gerade \u201e{campaign}\u201c",
        "es": "El banco está promocionando \u201c{campaign}\u201d ahora mismo",
    },
    "reason.eligible": {
        "en": "You can get {name}",
        "da": "Du kan få {name}",
        "nl": "U komt in aanmerking voor {name}",
        "de": "Sie können {name} erhalten",
        "es": "Puede obtener {name}",
    },
    "reason.fallback": {
        "en": "General content, the same for everyone on this page",
        "da": "Generelt indhold, det samme for alle på denne side",
        "nl": "Algemene inhoud, voor iedereen op deze pagina hetzelfde",
        "de": "Allgemeiner Inhalt, für alle auf dieser Seite gleich",
        "es": "Contenido general, el mismo para todos en esta página",
    },
    "reason.advisor": {
        "en": "An advisor who knows {topic} can call you: {reason}",
        "da": "En rådgiver med forstand på {topic} kan ringe til dig: {reason}",
        "nl": "Een adviseur die {topic} kent kan u bellen: {reason}",
        "de": "Ein Berater, der sich mit {topic} auskennt, kann Sie anrufen: {reason}",
        "es": "Un asesor que conoce {topic} puede llamarle: {reason}",
    },
    # ------------------------------------------------------------------ the why page
    "why.title": {
        "en": "Why you saw this",
        "da": "Hvorfor du så dette",
        "nl": "Waarom u dit zag",
        "de": "Warum Sie das gesehen haben",
        "es": "Por qué vio esto",
    },
    "why.nothing_personal": {
        "en": "No data about you was used to choose this",
        "da": "Der blev ikke brugt data om dig til at vælge dette",
        "nl": "Er zijn geen gegevens over u gebruikt om dit te kiezen",
        "de": "Für diese Auswahl wurden keine Daten über Sie verwendet",
        "es": "No se usó ningún dato sobre usted para elegir esto",
    },
    "why.sources": {
        "en": "Data used",
        "da": "Anvendte data",
        "nl": "Gebruikte gegevens",
        "de": "Verwendete Daten",
        "es": "Datos usados",
    },
    # ------------------------------------------------------------------ the data page
    "data.title": {
        "en": "What we know about you",
        "da": "Hvad vi ved om dig",
        "nl": "Wat wij over u weten",
        "de": "Was wir über Sie wissen",
        "es": "Lo que sabemos de usted",
    },
    "data.interest": {
        "en": "Interest in {topic}: {count} visits, the last on {date}",
        "da": "Interesse for {topic}: {count} besøg, det seneste den {date}",
        "nl": "Interesse in {topic}: {count} bezoeken, het laatste op {date}",
        "de": "Interesse an {topic}: {count} Besuche, zuletzt am {date}",
        "es": "Interés en {topic}: {count} visitas, la última el {date}",
    },
    "data.funnel": {
        "en": "Where you are with {topic}: {stage}",
        "da": "Hvor du er med {topic}: {stage}",
        "nl": "Waar u staat met {topic}: {stage}",
        "de": "Ihr Stand bei {topic}: {stage}",
        "es": "En qué punto está con {topic}: {stage}",
    },
    "stage.researching": {
        "en": "reading about it",
        "da": "læser om det",
        "nl": "leest erover",
        "de": "informieren sich",
        "es": "informándose",
    },
    "stage.considering": {
        "en": "comparing options",
        "da": "sammenligner muligheder",
        "nl": "vergelijkt opties",
        "de": "vergleichen Angebote",
        "es": "comparando opciones",
    },
    "stage.applying": {
        "en": "application started",
        "da": "ansøgning påbegyndt",
        "nl": "aanvraag begonnen",
        "de": "Antrag begonnen",
        "es": "solicitud empezada",
    },
    "stage.submitted": {
        "en": "application sent",
        "da": "ansøgning sendt",
        "nl": "aanvraag verstuurd",
        "de": "Antrag gesendet",
        "es": "solicitud enviada",
    },
    "stage.customer": {
        "en": "you hold it",
        "da": "du har det",
        "nl": "u hebt het",
        "de": "Sie besitzen es",
        "es": "ya lo tiene",
    },
    "data.products": {
        "en": "Products you hold: {products}",
        "da": "Produkter, du har: {products}",
        "nl": "Producten die u hebt: {products}",
        "de": "Produkte, die Sie besitzen: {products}",
        "es": "Productos que tiene: {products}",
    },
    "data.trait": {
        "en": "{name}: {value}",
        "da": "{name}: {value}",
        "nl": "{name}: {value}",
        "de": "{name}: {value}",
        "es": "{name}: {value}",
    },
    "data.balance": {
        "en": "Your latest balance: {balance}",
        "da": "Din seneste saldo: {balance}",
        "nl": "Uw laatste saldo: {balance}",
        "de": "Ihr letzter Kontostand: {balance}",
        "es": "Su último saldo: {balance}",
    },
    "data.overdrawn": {
        "en": "Your account is overdrawn",
        "da": "Din konto er overtrukket",
        "nl": "Uw rekening staat rood",
        "de": "Ihr Konto ist überzogen",
        "es": "Su cuenta está en descubierto",
    },
    "data.offer": {
        "en": "We showed you \u201c{name}\u201d {count} times; you clicked it {clicks} times",
        "da": "Vi viste dig \u201c{name}\u201d {count} gange; du klikkede {clicks} gange",
        "nl": "We toonden u \u201c{name}\u201d {count} keer; u klikte {clicks} keer",
        "de": "Wir haben Ihnen \u201e{name}\u201c {count}-mal gezeigt; "
        "Sie haben {clicks}-mal geklickt",
        "es": "Le mostramos \u201c{name}\u201d {count} veces; hizo clic {clicks} veces",
    },
    "data.activity": {
        "en": "{count} visits and events since {date}, the last on {last}",
        "da": "{count} besøg og hændelser siden {date}, den seneste den {last}",
        "nl": "{count} bezoeken en gebeurtenissen sinds {date}, de laatste op {last}",
        "de": "{count} Besuche und Ereignisse seit {date}, zuletzt am {last}",
        "es": "{count} visitas y eventos desde el {date}, el último el {last}",
    },
    "data.security": {
        "en": "{devices} devices and {places} places we recognise as yours, "
        "to protect your account",
        "da": "{devices} enheder og {places} steder, vi genkender som dine, "
        "for at beskytte din konto",
        "nl": "{devices} apparaten en {places} plaatsen die we als de uwe herkennen, "
        "om uw rekening te beschermen",
        "de": "{devices} Geräte und {places} Orte, die wir als Ihre erkennen, "
        "um Ihr Konto zu schützen",
        "es": "{devices} dispositivos y {places} lugares que reconocemos como suyos, "
        "para proteger su cuenta",
    },
    "data.consent.granted": {
        "en": "Allowed: {source} for {purpose}",
        "da": "Tilladt: {source} til {purpose}",
        "nl": "Toegestaan: {source} voor {purpose}",
        "de": "Erlaubt: {source} für {purpose}",
        "es": "Permitido: {source} para {purpose}",
    },
    "data.consent.refused": {
        "en": "Not allowed: {source} for {purpose}",
        "da": "Ikke tilladt: {source} til {purpose}",
        "nl": "Niet toegestaan: {source} voor {purpose}",
        "de": "Nicht erlaubt: {source} für {purpose}",
        "es": "No permitido: {source} para {purpose}",
    },
    "data.used_for": {
        "en": "Used for",
        "da": "Bruges til",
        "nl": "Gebruikt voor",
        "de": "Verwendet für",
        "es": "Usado para",
    },
    "data.not_used": {
        "en": "Not used: you did not allow it",
        "da": "Ikke brugt: du har ikke givet tilladelse",
        "nl": "Niet gebruikt: u gaf er geen toestemming voor",
        "de": "Nicht verwendet: Sie haben es nicht erlaubt",
        "es": "No se usa: usted no lo permitió",
    },
}


def language_of(*hints: object) -> str:
    """The first hint (``da``, ``da-DK``, ``nl_NL``, an Accept-Language header's first tag)
    that names a language nextbest has texts in; else English."""
    for hint in hints:
        if not isinstance(hint, str):
            continue
        for tag in hint.split(","):
            code = tag.strip()[:2].lower()
            if code in LANGUAGES:
                return code
    return DEFAULT_LANGUAGE


def say(key: str, language: str, **facts: Any) -> str:
    """The text ``key`` in ``language`` (English where it has none), with ``facts`` filled
    in. An unknown key is a programming error: KeyError."""
    templates = TEXTS[key]
    template = templates.get(language) or templates[DEFAULT_LANGUAGE]
    return template.format(**facts)
